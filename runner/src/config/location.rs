//! Where in the pipeline file something was written, for error messages.

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

/// A line and column (both from 1) in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: Arc<Path>,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// Finds keys and values of a parsed pipeline file by their path.
pub struct Locator<'a> {
    file: Arc<Path>,
    text: &'a str,
    doc: &'a toml_edit::Document<String>,
}

impl<'a> Locator<'a> {
    pub fn new(file: Arc<Path>, text: &'a str, doc: &'a toml_edit::Document<String>) -> Self {
        Locator { file, text, doc }
    }

    /// The location of a byte range of the file.
    pub fn at(&self, span: Range<usize>) -> Location {
        location_of(&self.file, self.text, span.start)
    }

    /// Where the last key of `path` is written (for `a.b.c`, the `c`).
    pub fn key(&self, path: &[&str]) -> Option<Location> {
        let (last, parents) = path.split_last()?;
        let parent = self.item(parents)?;
        let key = parent.as_table_like()?.key(last)?;
        key.span().map(|span| self.at(span))
    }

    /// Where the value at `path` is written; numeric segments index arrays.
    pub fn value(&self, path: &[&str]) -> Option<Location> {
        let item = self.item(path)?;
        item.span().map(|span| self.at(span))
    }

    /// The key's location when the path ends in a key of a table, the value's
    /// location when it ends in an array element, or the closest written parent.
    pub fn nearest(&self, path: &[&str]) -> Option<Location> {
        (0..=path.len()).rev().find_map(|n| {
            let prefix = &path[..n];
            let element = match prefix.split_last() {
                Some((last, parent)) => last.parse().ok().and_then(|i| self.element(parent, i)),
                None => None,
            };
            element.or_else(|| self.key(prefix)).or_else(|| self.value(prefix))
        })
    }

    fn item(&self, path: &[&str]) -> Option<&'a toml_edit::Item> {
        let mut item = self.doc.as_item();
        for segment in path {
            item = item.as_table_like()?.get(segment)?;
        }
        Some(item)
    }

    /// The location of an element of an array at `path`.
    pub fn element(&self, path: &[&str], index: usize) -> Option<Location> {
        let array = self.item(path)?.as_array()?;
        array.get(index)?.span().map(|span| self.at(span))
    }
}

/// Converts a byte offset into a line and column (columns count characters).
pub fn location_of(file: &Arc<Path>, text: &str, offset: usize) -> Location {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    Location { file: file.clone(), line, column }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns_counted_from_one() {
        let file: Arc<Path> = Arc::from(Path::new("p.toml"));
        let text = "a = 1\nbé = 2\n";
        assert_eq!(location_of(&file, text, 0).line, 1);
        let at = location_of(&file, text, text.find('=').unwrap());
        assert_eq!((at.line, at.column), (1, 3));
        let second = text.rfind('=').unwrap();
        let at = location_of(&file, text, second);
        assert_eq!((at.line, at.column), (2, 4));
    }

    #[test]
    fn keys_and_array_elements_are_found_by_path() {
        let text = "[stages.distance]\ntype = \"distance\"\ninputs = [\"a\", \"fixs\"]\n";
        let doc = toml_edit::Document::parse(text.to_owned()).unwrap();
        let locator = Locator::new(Arc::from(Path::new("p.toml")), text, &doc);
        let key = locator.key(&["stages", "distance", "type"]).unwrap();
        assert_eq!((key.line, key.column), (2, 1));
        let input = locator.element(&["stages", "distance", "inputs"], 1).unwrap();
        assert_eq!((input.line, input.column), (3, 16));
    }
}
