//! The metrics registry: every feature registers its counters at configuration time and gets
//! back slot indices; the glue keeps one `u64` per slot in shared memory (so all workers add to
//! the same numbers) and renders them here as Prometheus text.

use core::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Family {
    name: String,
    help: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Series {
    family: usize,
    /// Rendered label set, e.g. `zone="api",outcome="passed"`.
    labels: String,
    /// For histograms: upper bounds; the series then owns `buckets.len() + 2` slots
    /// (one count per bucket, then the sum, then the total count).
    buckets: Vec<u64>,
    /// For histograms: observations per base unit (1000 for milliseconds rendered as
    /// seconds), so slots stay integers and the exposition uses Prometheus's base units.
    per_unit: u64,
    slot: usize,
}

/// Slot index of a histogram: observe with [`Histogram::slots_for`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    first: usize,
    buckets: Vec<u64>,
}

impl Histogram {
    /// Slots to increment for one observation: the bucket's, the sum's (by `value`) and the
    /// count's. Returned as (bucket slot, sum slot, count slot).
    pub fn slots_for(&self, value: u64) -> (usize, usize, usize) {
        let bucket = self.buckets.iter().position(|&b| value <= b).unwrap_or(self.buckets.len());
        let n = self.buckets.len() + 1; // +Inf bucket
        (self.first + bucket, self.first + n, self.first + n + 1)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    families: Vec<Family>,
    series: Vec<Series>,
    slots: usize,
}

impl Registry {
    fn family(&mut self, name: &str, help: &str, kind: Kind) -> usize {
        if let Some(i) = self.families.iter().position(|f| f.name == name) {
            return i;
        }
        self.families.push(Family { name: name.into(), help: help.into(), kind });
        self.families.len() - 1
    }

    fn series(
        &mut self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: &[(&str, &str)],
        buckets: &[u64],
        per_unit: u64,
    ) -> usize {
        let family = self.family(name, help, kind);
        let labels = render_labels(labels);
        if let Some(s) = self.series.iter().find(|s| s.family == family && s.labels == labels) {
            return s.slot;
        }
        let slot = self.slots;
        self.slots += if kind == Kind::Histogram { buckets.len() + 3 } else { 1 };
        self.series.push(Series { family, labels, buckets: buckets.to_vec(), per_unit, slot });
        slot
    }

    /// Registers (or finds) a counter series and returns its slot.
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)]) -> usize {
        self.series(name, help, Kind::Counter, labels, &[], 1)
    }

    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)]) -> usize {
        self.series(name, help, Kind::Gauge, labels, &[], 1)
    }

    /// Registers a histogram with the given bucket upper bounds (ascending), in units of which
    /// `per_unit` make one base unit: observations in ms with `per_unit` 1000 are rendered in
    /// seconds (`le="0.005"`), as Prometheus names them (`_seconds`).
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        buckets: &[u64],
        per_unit: u64,
    ) -> Histogram {
        let first = self.series(name, help, Kind::Histogram, labels, buckets, per_unit);
        Histogram { first, buckets: buckets.to_vec() }
    }

    /// Number of `u64` slots the shared memory must hold.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Identifies the layout: shared memory kept across a reload is only reused when the
    /// layout is identical, otherwise counters would land in another metric's slot.
    pub fn signature(&self) -> u64 {
        let mut h = Fnv::default();
        for s in &self.series {
            let f = &self.families[s.family];
            h.write(f.name.as_bytes());
            h.write(s.labels.as_bytes());
            h.write(&s.slot.to_le_bytes());
            h.write(&s.buckets.len().to_le_bytes());
        }
        h.0
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, values: &[u64]) -> String {
        let value = |i: usize| values.get(i).copied().unwrap_or(0);
        let mut out = String::with_capacity(64 * self.series.len());
        for (fi, f) in self.families.iter().enumerate() {
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
            for s in self.series.iter().filter(|s| s.family == fi) {
                if f.kind != Kind::Histogram {
                    let _ = writeln!(out, "{}{} {}", f.name, braces(&s.labels), value(s.slot));
                    continue;
                }
                let mut cumulative = 0;
                let bounds = s.buckets.iter().map(|&b| fixed(b, s.per_unit)).chain(["+Inf".to_string()]);
                for (i, le) in bounds.enumerate() {
                    cumulative += value(s.slot + i);
                    let labels = join_labels(&s.labels, &format!("le=\"{le}\""));
                    let _ = writeln!(out, "{}_bucket{{{labels}}} {cumulative}", f.name);
                }
                let n = s.buckets.len() + 1;
                let _ = writeln!(out, "{}_sum{} {}", f.name, braces(&s.labels), fixed(value(s.slot + n), s.per_unit));
                let _ = writeln!(out, "{}_count{} {}", f.name, braces(&s.labels), value(s.slot + n + 1));
            }
        }
        out
    }
}

/// `v / per_unit` as an exact decimal (`per_unit` a power of ten): 5 ms -> `0.005`.
fn fixed(v: u64, per_unit: u64) -> String {
    let (whole, frac) = (v / per_unit, v % per_unit);
    if frac == 0 {
        return whole.to_string();
    }
    let digits = per_unit.ilog10() as usize;
    let frac = format!("{frac:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

fn join_labels(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a},{b}")
    }
}

/// FNV-1a, for layout signatures and cache keys: stable across builds and processes.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_deduplicated_and_rendered_per_family() {
        let mut r = Registry::default();
        let a = r.counter("shield_cors_preflight_total", "Preflights.", &[("result", "allowed")]);
        let b = r.counter("shield_cors_preflight_total", "Preflights.", &[("result", "denied")]);
        assert_eq!(r.counter("shield_cors_preflight_total", "Preflights.", &[("result", "allowed")]), a);
        let c = r.counter("shield_headers_applied_total", "Responses given headers.", &[]);
        assert_eq!((a, b, c, r.slots()), (0, 1, 2, 3));
        let text = r.render(&[5, 2, 9]);
        assert_eq!(text.matches("# TYPE shield_cors_preflight_total counter").count(), 1);
        assert!(text.contains("shield_cors_preflight_total{result=\"allowed\"} 5\n"));
        assert!(text.contains("shield_cors_preflight_total{result=\"denied\"} 2\n"));
        assert!(text.contains("shield_headers_applied_total 9\n"));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut r = Registry::default();
        let h = r.histogram("shield_redis_latency_seconds", "Latency.", &[], &[1, 5, 250, 1000], 1000);
        assert_eq!(r.slots(), 7);
        let mut values = vec![0u64; r.slots()];
        for v in [0, 3, 4, 100, 1500] {
            let (bucket, sum, count) = h.slots_for(v);
            values[bucket] += 1;
            values[sum] += v;
            values[count] += 1;
        }
        let text = r.render(&values);
        // Observed in ms, exposed in seconds.
        assert!(text.contains("shield_redis_latency_seconds_bucket{le=\"0.001\"} 1\n"), "{text}");
        assert!(text.contains("shield_redis_latency_seconds_bucket{le=\"0.005\"} 3\n"));
        assert!(text.contains("shield_redis_latency_seconds_bucket{le=\"0.25\"} 4\n"));
        assert!(text.contains("shield_redis_latency_seconds_bucket{le=\"1\"} 4\n"));
        assert!(text.contains("shield_redis_latency_seconds_bucket{le=\"+Inf\"} 5\n"));
        assert!(text.contains("shield_redis_latency_seconds_sum 1.607\n"));
        assert!(text.contains("shield_redis_latency_seconds_count 5\n"));
        assert_eq!(
            (fixed(0, 1000), fixed(1000, 1000), fixed(1050, 1000), fixed(7, 1)),
            ("0".into(), "1".into(), "1.05".into(), "7".into())
        );
    }

    #[test]
    fn signature_changes_with_layout_and_labels_are_escaped() {
        let mut a = Registry::default();
        a.counter("x", "h", &[("zone", "a\"b")]);
        let mut b = a.clone();
        assert_eq!(a.signature(), b.signature());
        b.counter("y", "h", &[]);
        assert_ne!(a.signature(), b.signature());
        assert!(a.render(&[1]).contains("x{zone=\"a\\\"b\"} 1"));
    }
}
