//! The pages, as maud templates: every interpolated value is HTML-escaped; the only markup let
//! through unescaped is the SVG built in [`super::svg`] (itself escaped) and runbook Markdown
//! rendered with its raw HTML turned into text.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::svg::{self, ActionMark, FindingMark};
use super::{AuditQuery, ChainStatus, Chrome, seg};
use crate::agent::{AgentReport, AgentStatus};
use crate::audit::{Entry, EntryKind, Filter, SignedHead};
use crate::charts::{ChartSet, Role};
use crate::detect::Finding;
use crate::engine::{Leadership, View, WatchView};
use crate::incident::{Incident, IncidentState};
use crate::policy::Decision;
use crate::runbook::checks::CheckSource;
use crate::runbook::{CheckResult, Outcome, Outcomes, Runbook};
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
            body data-run=[c.live_run.as_deref()] data-frozen[c.frozen] {
                header.top {
                    a.brand href="/" { "babysitter" }
                    nav {
                        a href="/" { "Runs" }
                        a href="/runbooks" { "Runbooks" }
                        a href="/audit" { "Audit log" }
                    }
                    @if let Some(l) = &c.leadership { (leader_badge(l)) }
                    span.muted id="live" { @if c.frozen { "not refreshing (form answer)" } @else { "live" } }
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

/// Who leads, for the header: this replica's role, and who holds the Lease.
fn leader_badge(l: &Leadership) -> Markup {
    let title = match (&l.lease, &l.identity) {
        (Some(lease), Some(me)) => format!("Lease {lease}; this replica is {me}"),
        (Some(lease), None) => format!("Lease {lease}"),
        _ => "no leader election: a single instance leads".to_string(),
    };
    html! {
        span.leadership.leader[l.is_leader].follower[!l.is_leader] id="leadership" title=(title) {
            @if l.is_leader { "leader" } @else { "follower" }
            @match (&l.holder, &l.lease) {
                (Some(h), _) => { " · holder " strong { (h) } }
                (None, Some(_)) => { " · holder unknown" }
                (None, None) => { " · single instance" }
            }
            @if !l.is_leader { " · read-only: this replica takes no action" }
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
    let blind_runs: Vec<&WatchView> = view
        .watches
        .iter()
        .filter(|w| w.status == "blind")
        .collect();
    let blind = blind_runs.len();
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
        @if !blind_runs.is_empty() {
            section.card.attention.blind id="blind" {
                h2 { (blind) " blind run" @if blind != 1 { "s" } ": nothing is detected or done on "
                     @if blind == 1 { "it" } @else { "them" } " until the charts return" }
                ul {
                    @for w in &blind_runs {
                        li {
                            a href={ "/runs/" (seg(&w.run)) } { strong { (w.run) } }
                            @if let Some(b) = w.blind_since {
                                " — blind since " (fmt_time(b)) " UTC (" (ago(view.now, b)) ")"
                            }
                            @if let Some(e) = &w.source_error { br; code.error-text { (e) } }
                        }
                    }
                }
            }
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
                                @if let Some(cost) = &p.rollback { " · it " (cost.to_string()) }
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
                @if let Some(cost) = &p.rollback { p.rollback { "It " (cost.to_string()) "." } }
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
        @if let Some(a) = &i.agent { (agent_report(a)) }
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

fn agent_status(s: AgentStatus) -> (&'static str, &'static str) {
    match s {
        AgentStatus::Proposed => ("proposed a step", "ok"),
        AgentStatus::DoesNotKnow => ("does not know", "muted"),
        AgentStatus::Failed => ("failed", "error-text"),
    }
}

fn fmt_confidence(c: Option<f64>) -> String {
    match c {
        Some(c) if c.is_finite() => format!("{c:.2}"),
        _ => "—".into(),
    }
}

/// The LLM agent's investigation: what it proposes (never carried out by itself), how far its
/// evidence held up when re-run, the gate's verdict, and the whole transcript on demand.
fn agent_report(a: &AgentReport) -> Markup {
    let (status, class) = agent_status(a.status);
    html! {
        section.card.agent id="agent" {
            h2 { "LLM agent's report " span.badge.proposal { "proposal — not executed" } }
            p.muted { "The agent investigates with read-only tools and may only propose a runbook step; "
                      "babysitter never carries it out by itself. Acting on it needs a human." }
            p { "status " span class=(class) { (status) } " · model " code { (a.model) } }
            @if !a.summary.is_empty() { p.summary { (a.summary) } }
            @if let Some(e) = &a.error { p.error-text { "error: " (e) } }
            @if let Some(p) = &a.proposal {
                table.proposal {
                    tbody {
                        tr { th { "Proposed step" } td { strong { (p.action.to_string()) } } }
                        tr { th { "Runbook" } td { a href={ "/runbooks/" (seg(&p.runbook)) } { (p.runbook) } } }
                        tr { th { "Rationale" } td { (p.rationale) } }
                        tr { th { "Confidence" } td {
                            strong { (fmt_confidence(a.confidence)) }
                            " after re-running the evidence (the model stated " (fmt_confidence(a.stated_confidence)) ")"
                        } }
                        tr { th { "Policy gate" } td {
                            @match &a.decision {
                                Some(d) => {
                                    span class={ "verdict-" (d.verdict.as_str()) } { (d.verdict.as_str()) }
                                    " (" (d.rule) "): " (d.reason)
                                }
                                None => span.muted { "not judged (the run is no longer watched)" },
                            }
                        } }
                    }
                }
            }
            @if !a.evidence.is_empty() {
                h3 { "Evidence checks (each cited query re-run)" }
                table.evidence {
                    thead { tr { th { "Query" } th { "Status" } th { "Detail" } } }
                    tbody {
                        @for e in &a.evidence {
                            tr {
                                td { code { (e.query) } }
                                td { span class={ "evidence-" (e.status) } { (e.status.replace('_', " ")) } }
                                td { @if let Some(d) = &e.detail { (d) } }
                            }
                        }
                    }
                }
            }
            p.muted {
                (a.usage.steps) " model calls · " (a.usage.total_tokens) " tokens · "
                (format!("{:.1}", a.usage.wall_secs)) " s"
                @if a.redacted_names > 0 { " · " (a.redacted_names) " names redacted before sending" }
            }
            details.transcript {
                summary { "Transcript (" (a.transcript.len()) " messages, as sent and received)" }
                ol {
                    @for m in &a.transcript {
                        li {
                            strong { (m.role) }
                            @if let Some(id) = &m.tool_call_id { " " span.muted { "answers " (id) } }
                            @if let Some(t) = &m.content { pre { (clip(t.clone(), 20_000)) } }
                            @for call in &m.tool_calls {
                                div { "calls " code { (call.function.name) "(" (clip(call.function.arguments.clone(), 2_000)) ")" } }
                            }
                        }
                    }
                }
            }
        }
    }
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

/// The hash chain's state, the first thing the audit page shows.
fn chain_status(chain: &ChainStatus, signed: Option<&Result<SignedHead, String>>) -> Markup {
    html! {
        @match chain {
            Ok((r, at)) => {
                @match &r.first_bad {
                    None => {
                        div.banner.ok.chain id="chain" {
                            strong { "Hash chain verified: " (r.entries) " entries" }
                            @if let Some((seq, hash)) = &r.head { " · head #" (seq) " " code { (short_hash(hash)) } }
                            @if let Some(cp) = r.checkpoint { " · from the retention checkpoint after #" (cp) }
                            br;
                            span.small { "No entry was edited, removed from the middle or reordered (checked "
                                (fmt_time(*at)) " UTC, up to the head shown; rechecked at most every "
                                (super::VERIFY_REUSE.as_secs()) " s). The chain alone cannot show a truncated tail or a full rewrite: compare the head with a signed head." }
                        }
                    }
                    Some(bad) => {
                        div.banner.danger.chain id="chain" {
                            strong { "Hash chain BROKEN at entry " (bad.seq) }
                            @if let Some(k) = &bad.kind { " (kind " code { (k) } ")" }
                            ": " (bad.reason)
                            br;
                            span.small { "The " (r.entries) " entries before it verify (checked " (fmt_time(*at)) " UTC). "
                                "Entries from #" (bad.seq) " on cannot be trusted; run " code { "babysitter audit verify" } " and investigate." }
                        }
                    }
                }
            }
            Err(e) => {
                div.banner.danger.chain id="chain" { strong { "The hash chain could not be verified: " } (e) }
            }
        }
        p.signed-head id="signed-head" {
            @match signed {
                None => span.muted { "No signed head yet (no " code { "audit.signing_key_file" } " configured, or none written so far)." },
                Some(Ok(h)) => {
                    "Latest signed head: entry #" (h.seq) " " code { (short_hash(&h.hash)) }
                    " signed " (h.signed_at.replace('T', " ").trim_end_matches('Z')) " UTC · MAC " code { (short_hash(&h.mac)) }
                    span.muted { " — check it against the copy kept outside the database with " code { "babysitter audit verify --heads FILE" } }
                }
                Some(Err(e)) => span.error-text { "The latest signed head is unreadable: " (e) },
            }
        }
    }
}

/// The first 12 hex characters of a hash.
fn short_hash(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

pub(super) fn audit(
    c: &Chrome,
    f: &Filter,
    entries: &[Entry],
    older: Option<i64>,
    chain: &ChainStatus,
    signed: Option<&Result<SignedHead, String>>,
) -> Markup {
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
        (chain_status(chain, signed))
        p.muted { "Every decision and action, newest first. The same check from a shell: "
                  code { "babysitter audit verify" } ", or " a href="/api/v1/audit/verify" { "/api/v1/audit/verify" } "." }
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
        leadership: None,
        frozen: false,
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
        leadership: None,
        frozen: false,
    };
    let body = html! {
        h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
        p.error-text id="error" { (message) }
        p { a href="/" { "Back to the runs" } }
    };
    layout(&c, "Error", body)
}

/// What `POST /api/v1/runbooks/{id}/execute` answers to a dry run (the parts the page shows).
#[derive(Debug, serde::Deserialize)]
pub struct DryRun {
    /// `dry_run`: anything else means the API did something other than a dry run.
    pub mode: String,
    pub runbook: String,
    pub run: String,
    pub steps: Vec<DryStep>,
    pub checks: Vec<CheckResult>,
}

/// One step of a dry run, with the gate's decision now.
#[derive(Debug, serde::Deserialize)]
pub struct DryStep {
    pub step: usize,
    pub description: String,
    pub requires_approval: bool,
    pub decision: Decision,
}

fn check_source(s: CheckSource) -> &'static str {
    match s {
        CheckSource::Promql => "Prometheus",
        CheckSource::Chart => "the run's chart",
        CheckSource::Unknown => "nothing answered",
    }
}

fn triggers(rb: &Runbook) -> Markup {
    html! {
        @for (n, k) in rb.triggers.kinds.iter().enumerate() {
            @if n > 0 { " " }
            code { (k.as_str()) }
        }
        @if let Some(s) = rb.triggers.min_severity { " " span.muted { "(≥ " (s.as_str()) ")" } }
        @for c in &rb.triggers.charts { br; span.muted { "when " (c.to_string()) } }
    }
}

pub(super) fn runbooks(c: &Chrome, list: &[&Runbook]) -> Markup {
    let body = html! {
        h1 { "Runbooks" }
        p.muted { "What babysitter follows when it diagnoses an incident. When several match, the highest priority wins." }
        @if list.is_empty() {
            p.muted { "No runbooks are loaded." }
        } @else {
            table.runbooks {
                thead { tr { th { "Id" } th { "Title" } th { "Triggers" } th { "Priority" } th { "Steps" } } }
                tbody {
                    @for rb in list {
                        tr data-runbook=(rb.id) {
                            td { a href={ "/runbooks/" (seg(&rb.id)) } { code { (rb.id) } } }
                            td { (rb.title) }
                            td { (triggers(rb)) }
                            td.num { (rb.priority) }
                            td {
                                @for (n, s) in rb.steps.iter().enumerate() {
                                    @if n > 0 { " → " }
                                    (s.action.kind().to_string())
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(c, "Runbooks", body)
}

/// A step list as one line: `pause → capture diagnostics (needs approval) ■`.
fn plan_line(plan: &crate::runbook::Plan) -> Markup {
    html! {
        @if plan.steps.is_empty() { span.muted { "no step" } }
        @for (n, s) in plan.steps.iter().enumerate() {
            @if n > 0 { " → " }
            (s.action.to_string())
            @if s.requires_approval { " " span.badge.state-awaiting_approval { "needs approval" } }
        }
    }
}

/// The front matter as a plan a human reads: checks, the steps each outcome selects,
/// verification and escalation.
fn front_matter(rb: &Runbook) -> Markup {
    let defaults: Outcomes = rb
        .checks
        .iter()
        .map(|c| {
            let o = match c.unknown_as {
                Some(true) => Outcome::True,
                Some(false) => Outcome::False,
                None => Outcome::Unknown,
            };
            (c.id.clone(), o)
        })
        .collect();
    html! {
        div.cols {
            div.card {
                h2 { "Triggers" }
                p { (triggers(rb)) " · priority " strong { (rb.priority) } }
                h2 { "Checks" }
                @if rb.checks.is_empty() { p.muted { "None: the steps always run in order." } }
                @for ch in &rb.checks {
                    div.check {
                        h3 { code { (ch.id) } }
                        @if !ch.description.is_empty() { p { (ch.description) } }
                        p.muted {
                            "true when " code { (ch.promql) } " " (ch.op.to_string()) " " (ch.threshold)
                            @if let Some(p) = &ch.chart { "; without Prometheus: " (p.to_string()) }
                            @match ch.unknown_as {
                                Some(b) => { "; unanswered counts as " strong { (b) } }
                                None => { "; may stay " strong { "unknown" } }
                            }
                        }
                    }
                }
            }
            div.card {
                h2 { "Steps" }
                ol.steps {
                    @for s in &rb.steps {
                        li {
                            strong { (s.action.to_string()) }
                            @if s.requires_approval { " " span.badge.state-awaiting_approval { "needs approval" } }
                            @match &s.when { Some(w) => { " " span.muted { "when " (w.to_string()) } }
                                             None => { " " span.muted { "always" } } }
                            @if s.stop { " " span.badge { "ends the plan" } }
                        }
                    }
                }
                h3 { "Plan per outcome" }
                ul.outcomes {
                    li { "no check answered: " (plan_line(&rb.plan_for(&defaults))) }
                    @for ch in &rb.checks {
                        @for o in ch.possible() {
                            @let mut outcomes = defaults.clone();
                            @let _ = outcomes.insert(ch.id.clone(), o);
                            li { code { (ch.id) } " is " strong { (o.as_str()) } ": " (plan_line(&rb.plan_for(&outcomes))) }
                        }
                    }
                }
                h2 { "Verification" }
                p {
                    "within " strong { (humantime::format_duration(rb.verify.within)) }
                    @if let Some(s) = rb.verify.settle { ", holding for " (humantime::format_duration(s)) }
                    ": "
                    @for (n, e) in rb.verify.expect.iter().enumerate() {
                        @if n > 0 { ", " }
                        code { (e.as_str()) }
                    }
                }
                h2 { "Escalation" }
                p {
                    "after " strong { (rb.max_attempts) } " attempt(s) that do not verify, page ("
                    (rb.escalation_severity.as_str()) ") "
                    @match &rb.escalation_route { Some(r) => { "route " code { (r) } }
                                                  None => { "the watch's on-call route" } }
                }
            }
        }
    }
}

fn dry_run_result(plan: &DryRun) -> Markup {
    html! {
        section.card.dry-run id="dry-run" {
            h2 { "Dry run of " code { (plan.runbook) } " for run " a href={ "/runs/" (seg(&plan.run)) } { (plan.run) } }
            p.banner { "Nothing was done. This is the plan the runbook's checks choose now, and what the policy gate would decide for each step "
                       "(each judged as if the steps before it had just run). Recorded in the audit log as " code { "runbook_dry_run" } "." }
            h3 { "Checks, answered now" }
            @if plan.checks.is_empty() { p.muted { "The runbook has no checks." } }
            @else {
                table.checks {
                    thead { tr { th { "Check" } th { "Outcome" } th { "Value" } th { "Answered by" } th { "Detail" } } }
                    tbody {
                        @for ch in &plan.checks {
                            tr {
                                td { code { (ch.id) } }
                                td { strong { (ch.outcome.as_str()) } }
                                td.num { @if let Some(v) = ch.value { (svg::fmt_num(v)) } }
                                td { (check_source(ch.source)) }
                                td { (ch.detail) }
                            }
                        }
                    }
                }
            }
            h3 { "Steps and policy decisions" }
            @if plan.steps.is_empty() { p.muted { "The checks select no step." } }
            @else {
                table.decisions {
                    thead { tr { th { "#" } th { "Action" } th { "Decision" } th { "Rule" } th { "Reason" } } }
                    tbody {
                        @for s in &plan.steps {
                            tr data-verdict=(s.decision.verdict.as_str()) {
                                td.num { (s.step + 1) }
                                td { (s.description)
                                     @if s.requires_approval { " " span.badge.state-awaiting_approval { "runbook asks approval" } } }
                                td { span class={ "verdict-" (s.decision.verdict.as_str()) } { (s.decision.verdict.as_str().replace('_', " ")) } }
                                td { code { (s.decision.rule) } }
                                td { (s.decision.reason)
                                     @if let Some(t) = s.decision.retry_at { br; span.muted { "would pass from " (fmt_time(t)) " UTC" } } }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn runbook(
    c: &Chrome,
    rb: &Runbook,
    runs: &[String],
    chosen: Option<&str>,
    result: Option<Result<&DryRun, &str>>,
) -> Markup {
    let body = html! {
        p.meta { a href="/runbooks" { "Runbooks" } " / " code { (rb.id) } }
        h1 { (rb.title) }
        p.meta { "file " code { (rb.path) } " · sha256 " code { (short_hash(&rb.sha256)) } }
        @match result {
            Some(Ok(plan)) => (dry_run_result(plan)),
            Some(Err(e)) => div.banner.danger id="dry-run-error" { "Dry run refused: " (e) },
            None => {},
        }
        section.card id="dry-run-form" {
            h2 { "Dry run" }
            @if runs.is_empty() {
                p.muted { "No watched run allows this runbook." }
            } @else {
                @match &c.session {
                    Some(s) if s.can_operate() => {
                        form.dry-run method="post" action={ "/runbooks/" (seg(&rb.id)) "/dry-run" } {
                            input type="hidden" name="csrf" value=(s.form_token());
                            label { "Dry run for run "
                                select name="run" {
                                    @for r in runs {
                                        option value=(r) selected[chosen == Some(r.as_str())] { (r) }
                                    }
                                }
                            }
                            button type="submit" { "Show plan and decisions" }
                        }
                        p.muted { "Evaluates the checks on the run's charts and asks the policy gate about every step; acts on nothing." }
                    }
                    Some(s) => {
                        p.muted { (s.name) " has role " (s.role.as_str()) "; a dry run needs an operator token." }
                    }
                    None => {
                        p { a href={ "/login?next=" (seg(&c.path)) } { "Sign in with an operator token" } " to dry-run this runbook." }
                    }
                }
            }
        }
        (front_matter(rb))
        section.card.runbook {
            h2 { "Runbook text" }
            div.markdown { (PreEscaped(markdown(&rb.body))) }
        }
    };
    layout(c, &rb.title, body)
}
