//! The filter's counters: requests by result, matches by rule family.

use crate::filter::rules::Family;
use crate::status::metrics::Registry;

pub(super) struct Slots {
    pub passed: usize,
    pub blocked: usize,
    pub detected: usize,
    pub allowed: usize,
    pub families: Vec<(Family, usize)>,
}

impl super::WafMain {
    pub(super) fn register(&mut self, reg: &mut Registry) {
        if self.slots.is_some() {
            return;
        }
        const REQ: &str = "shield_filter_requests_total";
        const REQ_HELP: &str = "Requests inspected by shield_filter, by result.";
        const M: &str = "shield_filter_matches_total";
        const M_HELP: &str = "Rule matches, by rule family.";
        self.slots = Some(Slots {
            passed: reg.counter(REQ, REQ_HELP, &[("result", "passed")]),
            blocked: reg.counter(REQ, REQ_HELP, &[("result", "blocked")]),
            detected: reg.counter(REQ, REQ_HELP, &[("result", "detected")]),
            allowed: reg.counter(REQ, REQ_HELP, &[("result", "allowed")]),
            families: Family::ALL
                .iter()
                .chain(&[Family::Custom])
                .map(|f| (*f, reg.counter(M, M_HELP, &[("family", f.tag())])))
                .collect(),
        });
    }

    pub(super) fn slots(&self) -> Option<&Slots> {
        self.slots.as_ref()
    }
}
