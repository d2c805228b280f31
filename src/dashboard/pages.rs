//! The pages, as maud templates: every interpolated value is HTML-escaped; the only markup let
//! through unescaped is the SVG built in [`super::svg`] (itself escaped) and runbook Markdown
//! rendered with its raw HTML turned into text.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::svg::{self, ActionMark, FindingMark};
use super::{AuditQuery, Chrome, seg};
use crate::audit::{Entry, EntryKind, Filter};
use crate::charts::{ChartSet, Role};
use crate::detect::Finding;
use crate::engine::{View, WatchView};
use crate::incident::{Incident, IncidentState};
use crate::runbook::Runbook;
use crate::verify::VerifyStatus;

/// The time windows the run page offers, in hours; the first is the default.
pub const RUN_WINDOWS_H: [u32; 4] = [1, 3, 6, 24];
/// Evidence charts start this long before the incident's onset.
const EVIDENCE_BEFORE_SECS: f64 = 30.0 * 60.0;

pub const SCRIPT: &str = include_str!("dashboard.js");
pub const STYLE: &str = include_str!("dashboard.css");

/// Clock time as `2026-11-02 10:00:00`, UTC.
pub fn fmt_time(t: f64) -> String {
    if !t.is_finite() {
        return "—".into();
    }
    chrono::DateTime::from_timestamp(t.floor() as i64, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "—".into())
}

/// How long before `now` `t` was: `45 s ago`, `12 min ago`, `3 h ago`.
pub fn ago(now: f64, t: f64) -> String {
    let d = now - t;
    if !d.is_finite() {
        return String::new();
    }
    if d < 0.0 {
        return "in the future".into();
    }
    if d < 90.0 {
        format!("{d:.0} s ago")
    } else if d < 90.0 * 60.0 {
        format!("{:.0} min ago", d / 60.0)
    } else if d < 48.0 * 3600.0 {
        format!("{:.1} h ago", d / 3600.0)
    } else {
        format!("{:.0} d ago", d / 86_400.0)
    }
}

fn when(now: f64, t: f64) -> Markup {
    html! { time title=(fmt_time(t)) { (fmt_time(t)) " " span.muted { "(" (ago(now, t)) ")" } } }
}

fn state_badge(s: IncidentState) -> Markup {
    html! { span class={ "badge state-" (s.as_str()) } { (s.as_str().replace('_', " ")) } }
}

fn health_badge(status: &str) -> Markup {
    html! { span class={ "badge health-" (status) } { (status) } }
}

/// Runbook Markdown as HTML: tables on; raw HTML is shown as text and script-like link targets
/// are dropped, so a runbook cannot put markup or script on the page.
pub fn markdown(md: &str) -> String {
    use pulldown_cmark::{CowStr, Event, Options, Parser, Tag};
    fn safe_url(u: CowStr<'_>) -> CowStr<'_> {
        let lower = u.trim_start().to_ascii_lowercase();
        if ["javascript:", "data:", "vbscript:"]
            .iter()
            .any(|p| lower.starts_with(p))
        {
            CowStr::Borrowed("#")
        } else {
            u
        }
    }
    let events = Parser::new_ext(md, Options::ENABLE_TABLES).map(|ev| match ev {
        Event::Html(s) | Event::InlineHtml(s) => Event::Text(s),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Image {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        e => e,
    });
    let mut out = String::new();
    pulldown_cmark::html::push_html(&mut out, events);
    out
}

fn layout(c: &Chrome, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · babysitter" }
                link rel="stylesheet" href="/dashboard.css";
                script src="/dashboard.js" defer {}
            }
            body data-run=[c.live_run.as_deref()] {
                header.top {
                    a.brand href="/" { "babysitter" }
                    nav {
                        a href="/" { "Runs" }
                        a href="/audit" { "Audit log" }
                    }
                    span.muted id="live" { "live" }
                    span.who {
                        @match &c.session {
                            Some(s) => {
                                "signed in as " strong { (s.name) } " (" (s.role.as_str()) ") "
                                form.inline method="post" action="/logout" {
                                    button.link type="submit" { "sign out" }
                                }
                            }
                            None => {
                                a href={ "/login?next=" (seg(&c.path)) } { "Sign in" }
                            }
                        }
                    }
                }
                @if !c.audit_healthy {
                    div.banner.danger {
                        "The audit log cannot be written: babysitter takes no action until it can (fail closed)."
                    }
                }
                main data-now=(format!("{:.0}", c.now)) {
                    (body)
                }
                footer.muted { "engine clock " (fmt_time(c.now)) " UTC" }
            }
        }
    }
}

/// The newest finding of a run: from its incidents and the findings active now.
fn last_finding<'a>(w: &'a WatchView, incidents: &'a [&'a Incident]) -> Option<&'a Finding> {
    incidents
        .iter()
        .flat_map(|i| i.findings.iter())
        .chain(w.active_findings.iter())
        .max_by(|a, b| a.at.total_cmp(&b.at))
}

pub(super) fn index(c: &Chrome, view: &View) -> Markup {
    let blind = view.watches.iter().filter(|w| w.status == "blind").count();
    let open: Vec<&Incident> = view
        .incidents
        .values()
        .filter(|i| !i.state.is_final())
        .collect();
    let waiting: Vec<&Incident> = open
        .iter()
        .copied()
        .filter(|i| i.state == IncidentState::AwaitingApproval && i.pending.is_some())
        .collect();
    let body = html! {
        h1 { "Watched runs" }
        div.stats {
            div.stat { span.n { (view.watches.len()) } " runs" }
            div.stat.warn[blind > 0] { span.n { (blind) } " blind" }
            div.stat.warn[!open.is_empty()] { span.n { (open.len()) } " open incidents" }
            div.stat.danger[!waiting.is_empty()] { span.n { (waiting.len()) } " waiting for approval" }
        }
        @if !waiting.is_empty() {
            section.card.attention {
                h2 { "Waiting for a human" }
                ul {
                    @for i in &waiting {
                        @if let Some(p) = &i.pending {
                            li {
                                a href={ "/incidents/" (seg(&i.id)) } { (i.id) } " on "
                                a href={ "/runs/" (seg(&i.run)) } { (i.run) } ": "
                                strong { (p.action.to_string()) } " — " (p.decision.reason)
                            }
                        }
                    }
                }
            }
        }
        @if view.watches.is_empty() {
            p.muted { "No runs are watched. Add watches to the config file." }
        } @else {
            table.runs {
                thead { tr {
                    th { "Run" } th { "Health" } th { "Autonomy" } th { "Open incidents" }
                    th { "Last finding" } th { "Loss" } th { "Throughput" } th { "Last sample" }
                } }
                tbody {
                    @for w in &view.watches {
                        @let incs: Vec<&Incident> = view.incidents.values().filter(|i| i.run == w.run).collect();
                        tr data-run=(w.run) {
                            td { a href={ "/runs/" (seg(&w.run)) } { (w.run) } br; span.muted { (w.target.to_string()) } }
                            td {
                                (health_badge(&w.status))
                                @if let Some(b) = w.blind_since {
                                    br; span.muted { "blind since " (ago(view.now, b)) }
                                }
                                @if let Some(e) = &w.source_error {
                                    br; span.error-text { (e) }
                                }
                            }
                            td { (w.autonomy.to_string()) }
                            td {
                                @if w.open_incidents.is_empty() { span.muted { "none" } }
                                @for id in &w.open_incidents {
                                    @if let Some(i) = view.incidents.get(id) {
                                        a href={ "/incidents/" (seg(id)) } { (id) } " " (state_badge(i.state)) br;
                                    }
                                }
                            }
                            td {
                                @match last_finding(w, &incs) {
                                    Some(f) => {
                                        span class={ "sev-" (f.severity.as_str()) } { (f.kind.as_str()) }
                                        " on " code { (f.chart) } br;
                                        span.muted { (ago(view.now, f.at)) }
                                    }
                                    None => span.muted { "none" },
                                }
                            }
                            td.num { (latest(w, "loss")) }
                            td.num { (latest(w, "throughput")) }
                            td { @match w.last_sample { Some(t) => (ago(view.now, t)), None => span.muted { "no data yet" } } }
                        }
                    }
                }
            }
        }
    };
    layout(c, "Watched runs", body)
}

fn latest(w: &WatchView, chart: &str) -> String {
    match w.latest.get(chart) {
        Some(Some(v)) => svg::fmt_num(*v),
        Some(None) => "NaN/Inf".into(),
        None => "—".into(),
    }
}

/// Charts in the order an on-call engineer reads them: training signal first, hardware last.
fn chart_rank(role: Role) -> usize {
    const ORDER: [Role; 8] = [
        Role::Loss,
        Role::GradNorm,
        Role::Throughput,
        Role::StepTime,
        Role::Step,
        Role::GpuUtil,
        Role::XidErrors,
        Role::EccErrors,
    ];
    ORDER
        .iter()
        .position(|r| *r == role)
        .unwrap_or(ORDER.len() + role as usize)
}

fn finding_marks<'a>(findings: impl Iterator<Item = &'a Finding>, chart: &str) -> Vec<FindingMark> {
    let mut marks: Vec<FindingMark> = findings
        .filter(|f| f.chart == chart)
        .map(|f| FindingMark {
            at: f.at,
            onset: f.onset,
            kind: f.kind.as_str().to_string(),
            label: format!(
                "{} ({}) raised {} UTC: {}",
                f.kind,
                f.severity,
                fmt_time(f.at),
                f.message
            ),
        })
        .collect();
    marks.dedup_by(|a, b| a.at == b.at && a.kind == b.kind);
    marks
}

fn action_marks<'a>(incidents: impl Iterator<Item = &'a Incident>) -> Vec<ActionMark> {
    incidents
        .flat_map(|i| {
            i.actions.iter().map(move |a| ActionMark {
                at: a.at,
                label: format!(
                    "{}: {} {} at {} UTC — {}",
                    i.id,
                    a.action,
                    if a.ok { "done" } else { "failed" },
                    fmt_time(a.at),
                    a.detail
                ),
                ok: a.ok,
            })
        })
        .collect()
}

/// Every chart of `charts` (or only those named in `only`) over `[from, to]`.
fn chart_grid(
    charts: &ChartSet,
    from: f64,
    to: f64,
    findings: &[&Finding],
    actions: &[ActionMark],
    only: Option<&[String]>,
) -> Markup {
    let mut keys: Vec<_> = charts
        .iter()
        .filter(|(k, _)| only.is_none_or(|o| o.contains(&k.to_string())))
        .collect();
    keys.sort_by_key(|(k, _)| (chart_rank(k.role), k.to_string()));
    html! {
        @if keys.is_empty() {
            p.muted { "No chart data yet." }
        }
        div.charts {
            @for (k, s) in keys {
                @let name = k.to_string();
                (svg::chart(&name, s.samples(), from, to, &finding_marks(findings.iter().copied(), &name), actions))
            }
        }
    }
}

fn timeline(now: f64, i: &Incident) -> Markup {
    html! {
        ol.timeline {
            li { (when(now, i.opened_at)) " — opened (" (i.family.as_str()) ")"
                 @if let Some(by) = &i.requested_by { " by " (by) } }
            @for f in &i.findings {
                li { (when(now, f.at)) " — " span class={ "sev-" (f.severity.as_str()) } { (f.kind.as_str()) }
                     " on " code { (f.chart) } ": " (f.message) }
            }
            @if let Some(d) = &i.diagnosis {
                li { "diagnosed: runbook " strong { (d.runbook) } " — " (d.reason) }
            }
            @for a in &i.actions {
                li.action.failed[!a.ok] { (when(now, a.at)) " — " strong { (a.action.to_string()) } " "
                     @if a.ok { span.ok { "done" } } @else { span.error-text { "failed" } }
                     @if !a.detail.is_empty() { ": " (a.detail) } }
            }
            @if let Some(p) = &i.pending {
                @if i.state == IncidentState::AwaitingApproval {
                    li.attention { (when(now, p.requested_at)) " — waiting for approval: " strong { (p.action.to_string()) } }
                }
            }
            @if let Some(v) = &i.verification {
                li { "verification: " (verify_text(v)) }
            }
            @if let Some(o) = &i.outcome {
                li { (when(now, i.updated_at)) " — " (state_badge(i.state)) " " (o) }
            }
        }
    }
}

fn verify_text(v: &VerifyStatus) -> Markup {
    match v {
        VerifyStatus::Pending(d) => html! { span.muted { "pending — " (d) } },
        VerifyStatus::Passed(d) => html! { span.ok { "passed — " (d) } },
        VerifyStatus::Failed(d) => html! { span.error-text { "failed — " (d) } },
    }
}

pub(super) fn run(
    c: &Chrome,
    hours: u32,
    w: &WatchView,
    charts: &ChartSet,
    incidents: &[Incident],
    recent: &[Entry],
) -> Markup {
    let to = charts.latest_t().map_or(c.now, |t| t.max(c.now));
    let from = to - f64::from(hours) * 3600.0;
    let findings: Vec<&Finding> = incidents
        .iter()
        .flat_map(|i| i.findings.iter())
        .chain(w.active_findings.iter())
        .collect();
    let actions = action_marks(incidents.iter());
    let mut incs: Vec<&Incident> = incidents.iter().collect();
    incs.sort_by(|a, b| b.opened_at.total_cmp(&a.opened_at));
    let body = html! {
        h1 { (w.run) " " (health_badge(&w.status)) }
        p.meta {
            "target " code { (w.target.to_string()) } " · autonomy " strong { (w.autonomy.to_string()) }
            " · on-call route " code { (w.route) }
            @if let Some(t) = w.last_sample { " · last sample " (ago(c.now, t)) }
        }
        @if let Some(b) = w.blind_since {
            div.banner.danger {
                "Blind since " (fmt_time(b)) " UTC: nothing is detected or done on this run until its charts return."
                @if let Some(e) = &w.source_error { br; code { (e) } }
            }
        }
        section {
            h2 { "Charts"
                span.windows {
                    @for n in RUN_WINDOWS_H {
                        @if n == hours { strong { (n) " h" } }
                        @else { a href={ "/runs/" (seg(&w.run)) "?hours=" (n) } { (n) " h" } }
                    }
                }
            }
            p.muted { "Red bands run from a finding's onset to the point where it was raised (the dot); dashed lines are babysitter's actions." }
            (chart_grid(charts, from, to, &findings, &actions, None))
        }
        section {
            h2 { "Incidents" }
            @if incs.is_empty() { p.muted { "No incident in the last day." } }
            @for i in &incs {
                div.card {
                    h3 { a href={ "/incidents/" (seg(&i.id)) } { (i.id) } " " (state_badge(i.state)) " "
                         span.muted { (i.family.as_str()) } }
                    (timeline(c.now, i))
                }
            }
        }
        section {
            h2 { "Recent audit entries " a.small href={ "/audit?run=" (seg(&w.run)) } { "all" } }
            (audit_table(recent))
        }
    };
    layout(c, &w.run, body)
}

pub(super) fn incident(
    c: &Chrome,
    i: &Incident,
    charts: &ChartSet,
    runbook: Option<&Runbook>,
    trail: &[Entry],
    done: Option<String>,
) -> Markup {
    let onset = i.onset();
    let from = onset - EVIDENCE_BEFORE_SECS;
    let to = charts
        .latest_t()
        .map_or(c.now, |t| t.max(c.now))
        .max(from + 60.0);
    let findings: Vec<&Finding> = i.findings.iter().collect();
    let mut evidence: Vec<String> = i.findings.iter().map(|f| f.chart.clone()).collect();
    evidence.sort();
    evidence.dedup();
    let actions = action_marks(std::iter::once(i));
    let pending = i.pending.as_ref().filter(|p| {
        i.state == IncidentState::AwaitingApproval
            && p.approved_by.is_none()
            && p.rejected_by.is_none()
    });
    let body = html! {
        h1 { "Incident " (i.id) " " (state_badge(i.state)) }
        p.meta {
            "run " a href={ "/runs/" (seg(&i.run)) } { (i.run) } " · family " strong { (i.family.as_str()) }
            " · opened " (when(c.now, i.opened_at)) " · attempt " (i.attempt)
            @if i.paged { " · " span.attention { "on-call paged" } }
        }
        @if let Some(d) = &done {
            div.banner.ok id="done" { "You " (d) " the action. babysitter carries the decision out on its next pass." }
        }
        @if let Some(o) = &i.outcome { div.banner { strong { "Outcome: " } (o) } }
        @if let Some(p) = pending {
            section.card.attention id="pending" {
                h2 { "Waiting for approval" }
                p { strong { (p.action.to_string()) } " (step " (p.step + 1) ", attempt " (p.attempt) ")" }
                p.muted { "policy: " (p.decision.rule) " — " (p.decision.reason) " · requested " (ago(c.now, p.requested_at)) }
                @match &c.session {
                    Some(s) if s.can_operate() => {
                        form.settle method="post" {
                            input type="hidden" name="csrf" value=(s.form_token());
                            label { "Reason (recorded in the audit log) "
                                input type="text" name="reason" maxlength="2000" placeholder="optional"; }
                            button.approve type="submit" formaction={ "/actions/" (seg(&p.id)) "/approve" } { "Approve" }
                            button.reject type="submit" formaction={ "/actions/" (seg(&p.id)) "/reject" } { "Reject" }
                        }
                    }
                    Some(s) => {
                        p.muted { (s.name) " has role " (s.role.as_str()) "; approving needs an operator token." }
                        button.approve disabled { "Approve" } " " button.reject disabled { "Reject" }
                    }
                    None => {
                        p { a href={ "/login?next=" (seg(&c.path)) } { "Sign in with an operator token" } " to approve or reject." }
                        button.approve disabled { "Approve" } " " button.reject disabled { "Reject" }
                    }
                }
            }
        }
        section {
            h2 { "Evidence" }
            table {
                thead { tr { th { "Raised" } th { "Kind" } th { "Chart" } th { "Severity" } th { "Onset" } th { "Value" } th { "Message" } } }
                tbody {
                    @for f in &i.findings {
                        tr {
                            td { (fmt_time(f.at)) }
                            td { (f.kind.as_str()) }
                            td { code { (f.chart) } }
                            td { span class={ "sev-" (f.severity.as_str()) } { (f.severity.as_str()) } }
                            td { (fmt_time(f.onset)) }
                            td.num { @if let Some(v) = f.value { (svg::fmt_num(v)) } }
                            td { (f.message) }
                        }
                    }
                }
            }
            @if i.findings.is_empty() { p.muted { "Opened by hand (no finding)." } }
            (chart_grid(charts, from, to, &findings, &actions, Some(&evidence)))
        }
        section.cols {
            div.card {
                h2 { "Diagnosis and plan" }
                @match &i.diagnosis {
                    None => p.muted { "Not diagnosed yet." },
                    Some(d) => {
                        p { "Runbook " strong { (d.title) } " (" code { (d.runbook) } ")" }
                        p.muted { (d.reason) }
                        ol.plan {
                            @for (n, s) in d.plan.steps.iter().enumerate() {
                                li.done[n < i.next_step] {
                                    (s.action.to_string())
                                    @if s.requires_approval { " " span.badge.state-awaiting_approval { "needs approval" } }
                                }
                            }
                        }
                        p.muted {
                            "verify within " (humantime::format_duration(d.plan.verify.within))
                            ": " (d.plan.verify.expect.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", "))
                            " · at most " (d.plan.max_attempts) " attempt(s), then page (" (d.plan.escalation_severity.as_str()) ")"
                        }
                    }
                }
                @if let Some(v) = &i.verification { p { "Verification: " (verify_text(v)) } }
            }
            div.card {
                h2 { "Timeline" }
                (timeline(c.now, i))
                h3 { "Policy decisions" }
                @if i.decisions.is_empty() { p.muted { "none yet" } }
                ul {
                    @for (kind, d) in &i.decisions {
                        li { code { (kind.to_string()) } " → " span class={ "verdict-" (d.verdict.as_str()) } { (d.verdict.as_str()) }
                             " (" (d.rule) "): " (d.reason) }
                    }
                }
            }
        }
        @if let Some(rb) = runbook {
            section.card.runbook {
                h2 { "Runbook: " (rb.title) " " span.muted { (rb.path) } }
                div.markdown { (PreEscaped(markdown(&rb.body))) }
            }
        }
        section {
            h2 { "Audit trail " a.small href={ "/audit?incident=" (seg(&i.id)) } { "in the audit log" } }
            (audit_table(trail))
        }
    };
    layout(c, &format!("Incident {}", i.id), body)
}

/// At most `n` characters of `s`, with an ellipsis when cut.
fn clip(s: String, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// A payload: one line as the summary, the whole (pretty, up to 20,000 characters) on demand.
fn payload(v: &serde_json::Value) -> Markup {
    let line = v.to_string();
    if line.chars().count() <= 160 {
        return html! { code { (line) } };
    }
    let pretty = serde_json::to_string_pretty(v).unwrap_or(line.clone());
    html! {
        details {
            summary { code { (clip(line, 160)) } }
            pre { (clip(pretty, 20_000)) }
        }
    }
}

fn audit_table(entries: &[Entry]) -> Markup {
    html! {
        @if entries.is_empty() {
            p.muted { "No entries." }
        } @else {
            table.audit {
                thead { tr { th { "#" } th { "Time (UTC)" } th { "Kind" } th { "Run" } th { "Incident" } th { "Actor" } th { "Details" } } }
                tbody {
                    @for e in entries {
                        tr data-kind=(e.kind.as_str()) {
                            td.num { (e.seq) }
                            td { (e.ts.replace('T', " ").trim_end_matches('Z')) }
                            td { span class={ "kind kind-" (e.kind.as_str()) } { (e.kind.as_str()) } }
                            td { @if let Some(r) = &e.run { a href={ "/runs/" (seg(r)) } { (r) } } }
                            td { @if let Some(i) = &e.incident { a href={ "/incidents/" (seg(i)) } { (i) } } }
                            td { (e.actor) }
                            td.payload { (payload(&e.payload)) }
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn audit(c: &Chrome, f: &Filter, entries: &[Entry], older: Option<i64>) -> Markup {
    let q = AuditQuery {
        run: f.run.clone(),
        incident: f.incident.clone(),
        kind: f.kind.map(|k| k.as_str().to_string()),
        before: older,
    };
    let older_link = older.map(|b| {
        let mut parts = vec![format!("before={b}")];
        for (k, v) in [
            ("run", &q.run),
            ("incident", &q.incident),
            ("kind", &q.kind),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}={}", seg(v)));
            }
        }
        format!("/audit?{}", parts.join("&"))
    });
    let body = html! {
        h1 { "Audit log" }
        p.muted { "Every decision and action, newest first. Check the hash chain with "
                  code { "babysitter audit verify" } " or " a href="/api/v1/audit/verify" { "/api/v1/audit/verify" } "." }
        form.filters method="get" action="/audit" {
            label { "run " input type="text" name="run" value=[f.run.as_deref()]; }
            label { "incident " input type="text" name="incident" value=[f.incident.as_deref()]; }
            label { "kind "
                select name="kind" {
                    option value="" { "any" }
                    @for k in EntryKind::ALL {
                        option value=(k.as_str()) selected[f.kind == Some(k)] { (k.as_str()) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        (audit_table(entries))
        @if let Some(l) = older_link { p { a href=(l) { "Older entries →" } } }
    };
    layout(c, "Audit log", body)
}

pub(super) fn login(
    session: Option<&super::Session>,
    next: &str,
    error: Option<&str>,
    no_tokens: bool,
) -> Markup {
    let c = Chrome {
        session: session.cloned(),
        now: f64::NAN,
        audit_healthy: true,
        live_run: None,
        path: next.to_string(),
    };
    let body = html! {
        h1 { "Sign in" }
        @if let Some(e) = error { div.banner.danger { (e) } }
        @if no_tokens {
            p.banner { "No API tokens are configured ([[api.tokens]] in the config file), so nobody can sign in." }
        }
        p { "Paste an API token (the one you use as " code { "Authorization: Bearer …" } "). "
            "The browser keeps it in an HTTP-only cookie for 12 hours; a viewer token lets you read, an operator token lets you approve and reject." }
        form.login method="post" action="/login" {
            input type="hidden" name="next" value=(next);
            label { "API token " input type="password" name="token" autocomplete="current-password" required autofocus; }
            button type="submit" { "Sign in" }
        }
    };
    layout(&c, "Sign in", body)
}

pub(super) fn error(status: axum::http::StatusCode, message: &str) -> Markup {
    let c = Chrome {
        session: None,
        now: f64::NAN,
        audit_healthy: true,
        live_run: None,
        path: "/".into(),
    };
    let body = html! {
        h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
        p.error-text id="error" { (message) }
        p { a href="/" { "Back to the runs" } }
    };
    layout(&c, "Error", body)
}
