//! The report: the Markdown tables, the goals and whether they hold, and the JSON.

use super::*;

/// One of the speed goals, checked on this run's medians.
pub(crate) struct Goal {
    pub(crate) goal: &'static str,
    pub(crate) target: String,
    pub(crate) corpus: String,
    pub(crate) op: String,
    pub(crate) measured: f64,
    pub(crate) limit: f64,
    /// `measured >= limit` (a speed-up), else `measured < limit` (a cost).
    pub(crate) at_least: bool,
    pub(crate) met: bool,
}

impl Bench {
    pub(crate) fn median_of(&self, t: &str, c: &str, tool: &str, op: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.target == t && r.corpus == c && r.tool == tool && r.op == op)
            .map(|r| median(&r.secs))
    }

    /// The goals of the benchmark issue that this run measured.
    pub(crate) fn goals(&self) -> Vec<Goal> {
        let mut out = Vec::new();
        let mut seen: Vec<(String, String)> = Vec::new();
        for r in &self.rows {
            let key = (r.target.clone(), r.corpus.clone());
            if !seen.contains(&key) {
                seen.push(key);
            }
        }
        let mut check = |goal, t: &str, c: &str, op: &str, m: Option<f64>, limit, at_least| {
            if let Some(measured) = m {
                out.push(Goal {
                    goal,
                    target: t.into(),
                    corpus: c.into(),
                    op: op.into(),
                    measured,
                    limit,
                    at_least,
                    met: if at_least {
                        measured >= limit
                    } else {
                        measured < limit
                    },
                });
            }
        };
        let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
        for (t, c) in &seen {
            let (t, c) = (t.as_str(), c.as_str());
            let m = |tool, op| self.median_of(t, c, tool, op);
            for op in ["put", "get"] {
                let pkg = m("blockctl package", op);
                if c != "big" {
                    let r = ratio(m("rclone", op), pkg);
                    check("package vs rclone", t, c, op, r, 5.0, true);
                    let r = ratio(m("prefect", op), pkg);
                    check("package vs Prefect", t, c, op, r, 20.0, true);
                }
                let r = ratio(m("rclone", op), m("blockctl files", op));
                check("files vs rclone", t, c, op, r, 1.0, true);
                if t == "local" {
                    let r = ratio(pkg, m("tar+zstd", op));
                    check("package / tar+zstd", t, c, op, r, 1.3, false);
                }
                if c == "big" && (t == "s3" || t == "azure") {
                    // A cold get at least as fast as rclone; a put within 1.2x.
                    let limit = if op == "get" { 1.0001 } else { 1.2 };
                    let r = ratio(pkg, m("rclone", op));
                    check("package / rclone (big)", t, c, op, r, limit, false);
                }
            }
            if c == "many" {
                let r = ratio(
                    m("blockctl package", "re-put"),
                    m("blockctl package", "put"),
                );
                check("re-put / cold put", t, c, "re-put", r, 0.05, false);
            }
            if c == "flow" {
                let b = |tool, what| self.bytes_of(t, tool, what);
                // Round three: format 3 as cheap as format 1 cold, in few requests.
                let (f1, f3) = ("blockctl format 1", "blockctl format 3");
                for op in ["cold put", "cold get"] {
                    let r = ratio(m(f3, op), m(f1, op));
                    check("format 3 / format 1", t, c, op, r, 1.1, false);
                }
                if let Some(n) = b(f3, "cold get requests") {
                    check(
                        "cold get requests (at most 8)",
                        t,
                        c,
                        "cold get",
                        Some(n),
                        8.5,
                        false,
                    );
                }
                let pkg = "blockctl package";
                let r = ratio(b(pkg, "edit re-put up"), b(pkg, "cold put up"));
                check(
                    "edit re-put bytes / cold put bytes",
                    t,
                    c,
                    "edit re-put",
                    r,
                    0.02,
                    false,
                );
                let r = ratio(m("rclone", "edit re-put"), m(pkg, "edit re-put"));
                check(
                    "edit re-put: rclone / blockctl",
                    t,
                    c,
                    "edit re-put",
                    r,
                    1.0,
                    true,
                );
                let r = ratio(b(pkg, "edit get down"), b(pkg, "cold get down"));
                if t != "local" {
                    check(
                        "edit get bytes / package bytes",
                        t,
                        c,
                        "edit get",
                        r,
                        0.02,
                        false,
                    );
                }
                let cp = self.median_of("local", "flow", "cp -a", "copy");
                let r = ratio(m(pkg, "cached get"), cp);
                check(
                    "cached get / cp -a (local)",
                    t,
                    c,
                    "cached get",
                    r,
                    1.0,
                    false,
                );
                let r = ratio(m(pkg, "replace held"), cp);
                check(
                    "get --replace of the version held / cp -a (local)",
                    t,
                    c,
                    "replace held",
                    r,
                    0.3,
                    false,
                );
            }
        }
        for r in &self.rows {
            if (r.corpus == "big" || r.corpus == "tree") && r.tool.starts_with("blockctl") {
                let peak = *r.peak_kib.iter().max().unwrap_or(&0) as f64 / 1024.0;
                let op = format!("{} {}", r.tool.trim_start_matches("blockctl "), r.op);
                let goal = match r.corpus.as_str() {
                    "big" => "peak MiB (big)",
                    _ => "peak MiB (tree)",
                };
                check(goal, &r.target, &r.corpus, &op, Some(peak), 64.0, false);
            }
        }
        out
    }
}
