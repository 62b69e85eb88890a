//! The price per kilometre over fix time.
//!
//! An aggregate starts with the price its settings name. A reload that
//! changes the price hands the running tariff to the new instance, which adds
//! a step at the moment it takes over: distance driven before that moment
//! keeps the old price even when its segment arrives later (held back for
//! ordering or lookahead), and distance driven after it gets the new one.
//!
//! Shortcoming: the steps live in memory only. A process restarted after a
//! price change bills every segment it still receives at the configured
//! price, including distance driven before the change whose fixes were held
//! or redelivered across the restart; keeping the steps in the store would
//! close that gap.

/// Prices in force from given fix times on.
#[derive(Clone, Debug, PartialEq)]
pub struct Tariff {
    /// `(from_ms, price_per_km)`, ascending; the first applies since ever.
    steps: Vec<(i64, f64)>,
}

impl Tariff {
    pub fn new(price_per_km: f64) -> Self {
        Tariff { steps: vec![(i64::MIN, price_per_km)] }
    }

    /// The price for distance driven from `from_ms` on; earlier steps that
    /// start at or after `from_ms` are overridden.
    pub fn change(&mut self, from_ms: i64, price_per_km: f64) {
        if self.current() == price_per_km {
            return;
        }
        while self.steps.len() > 1 && self.steps.last().is_some_and(|s| s.0 >= from_ms) {
            self.steps.pop();
        }
        self.steps.push((from_ms, price_per_km));
    }

    /// The price in force now.
    pub fn current(&self) -> f64 {
        self.steps.last().map_or(0.0, |s| s.1)
    }

    /// Splits `mm` driven between two fix times over the prices in force,
    /// in proportion to time; the parts add up to `mm` exactly. `part` gets
    /// each part's time range, price and millimetres.
    pub fn split(
        &self,
        from_ms: i64,
        to_ms: i64,
        mm: i64,
        mut part: impl FnMut(i64, i64, f64, i64),
    ) {
        let last = self.steps.len() - 1;
        // Most segments lie after the latest change.
        if self.steps[last].0 <= from_ms || to_ms <= from_ms {
            let price = self.price_at(to_ms);
            part(from_ms, to_ms, price, mm);
            return;
        }
        let span = (to_ms - from_ms) as f64;
        let mut given = 0;
        let mut cursor = from_ms;
        for (i, &(_, price)) in self.steps.iter().enumerate() {
            let until = self.steps.get(i + 1).map_or(to_ms, |s| s.0.min(to_ms));
            if until <= cursor {
                continue;
            }
            let share = if until == to_ms {
                mm - given
            } else {
                ((until - from_ms) as f64 / span * mm as f64).round() as i64 - given
            };
            given += share;
            part(cursor, until, price, share);
            cursor = until;
            if cursor >= to_ms {
                break;
            }
        }
    }

    fn price_at(&self, ts_ms: i64) -> f64 {
        let i = self.steps.partition_point(|s| s.0 <= ts_ms);
        self.steps[i.saturating_sub(1)].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(tariff: &Tariff, from: i64, to: i64, mm: i64) -> Vec<(i64, i64, f64, i64)> {
        let mut out = Vec::new();
        tariff.split(from, to, mm, |a, b, p, m| out.push((a, b, p, m)));
        out
    }

    #[test]
    fn one_price_takes_everything() {
        let tariff = Tariff::new(0.2);
        assert_eq!(parts(&tariff, 0, 1000, 500), vec![(0, 1000, 0.2, 500)]);
    }

    #[test]
    fn a_segment_across_a_change_is_shared_by_time() {
        let mut tariff = Tariff::new(0.2);
        tariff.change(10_000, 0.3);
        assert_eq!(
            parts(&tariff, 9_000, 13_000, 4_000),
            vec![(9_000, 10_000, 0.2, 1_000), (10_000, 13_000, 0.3, 3_000)]
        );
        // Driven before the change, decided after it: the old price.
        assert_eq!(parts(&tariff, 8_000, 9_500, 10), vec![(8_000, 9_500, 0.2, 10)]);
        assert_eq!(parts(&tariff, 11_000, 12_000, 10), vec![(11_000, 12_000, 0.3, 10)]);
    }

    #[test]
    fn parts_add_up_and_later_changes_override() {
        let mut tariff = Tariff::new(0.1);
        tariff.change(100, 0.2);
        tariff.change(200, 0.3);
        tariff.change(150, 0.4);
        assert_eq!(tariff.current(), 0.4);
        let split = parts(&tariff, 0, 300, 999);
        assert_eq!(split.iter().map(|p| p.3).sum::<i64>(), 999);
        assert_eq!(split.iter().map(|p| p.2).collect::<Vec<_>>(), vec![0.1, 0.2, 0.4]);
        tariff.change(400, 0.4);
        assert_eq!(tariff.steps.len(), 3, "the same price is no change");
    }
}
