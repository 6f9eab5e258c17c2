//! The routing tree, as in Alertmanager: each route has label matchers, a
//! receiver, grouping and timing (inherited from its parent when unset),
//! optional escalation, and child routes. An alert descends into the first
//! matching child, and on into later siblings while the matched child says
//! `continue = true`; a route none of whose children match takes the alert
//! itself. Pure.

use serde::{Deserialize, Serialize};

use crate::matcher::{self, Labels, Matcher, MatcherError};

/// A route as written in the `[route]` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Receiver of alerts that stop at this route; inherited when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<String>,
    /// Label matchers (`=`, `!=`, `=~`, `!~`) on the alert's labels plus
    /// `severity`, `type` and `alertname`; all must match.
    #[serde(default)]
    pub matchers: Vec<String>,
    /// Keep matching later siblings after this route matched.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    /// Labels that split alerts into groups; `["..."]` groups by all
    /// labels (one group per alert). Inherited when unset; root default
    /// `["model", "type"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<Vec<String>>,
    /// Wait before the first notification of a new group (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_wait_ms: Option<u64>,
    /// Wait between notifications of a changed group (default 5 min).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_interval_ms: Option<u64>,
    /// Wait before repeating an unchanged, unacknowledged group (default 4 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_interval_ms: Option<u64>,
    /// Escalation of unacknowledged alerts of this route (not inherited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<EscalationConfig>,
    /// Child routes, tried in order.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// Escalation: alerts matching `matchers` still unacknowledged
/// `after_ms` after their group's first notification go to the next
/// receiver of `receivers`, one step per `after_ms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationConfig {
    /// Time an alert may stay unacknowledged before each step.
    pub after_ms: u64,
    /// Receivers notified in turn.
    pub receivers: Vec<String>,
    /// Which alerts escalate (default `severity="critical"`).
    #[serde(default = "default_escalation_matchers")]
    pub matchers: Vec<String>,
}

fn default_escalation_matchers() -> Vec<String> {
    vec![r#"severity="critical""#.into()]
}

pub const DEFAULT_GROUP_WAIT_MS: u64 = 30_000;
pub const DEFAULT_GROUP_INTERVAL_MS: u64 = 300_000;
pub const DEFAULT_REPEAT_INTERVAL_MS: u64 = 4 * 3_600_000;

impl RouteConfig {
    /// DESIGN.md's defaults: critical/high → PagerDuty + Slack + email;
    /// medium → Slack; low → the Slack info channel.
    pub fn design_defaults() -> Self {
        let child = |receiver: &str, m: &str, cont: bool| RouteConfig {
            receiver: Some(receiver.into()),
            matchers: vec![m.into()],
            continue_matching: cont,
            ..RouteConfig::default()
        };
        RouteConfig {
            receiver: Some("slack".into()),
            group_by: Some(vec!["model".into(), "type".into()]),
            routes: vec![
                child("pagerduty", r#"severity=~"critical|high""#, true),
                child("email", r#"severity=~"critical|high""#, true),
                child("slack", r#"severity=~"critical|high|medium""#, false),
                child("slack-info", r#"severity="low""#, false),
            ],
            ..RouteConfig::default()
        }
    }
}

/// A compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the tree: `0`, `0.1`, `0.1.0`, …
    pub id: String,
    pub receiver: String,
    pub matchers: Vec<Matcher>,
    pub continue_matching: bool,
    /// `None` = group by all labels.
    pub group_by: Option<Vec<String>>,
    pub group_wait_ms: u64,
    pub group_interval_ms: u64,
    pub repeat_interval_ms: u64,
    pub escalation: Option<Escalation>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone)]
pub struct Escalation {
    pub after_ms: u64,
    pub receivers: Vec<String>,
    pub matchers: Vec<Matcher>,
}

pub use crate::error::AlerterError as RouteError;

fn in_route(route: &str) -> impl Fn(MatcherError) -> RouteError + '_ {
    move |e| RouteError::BadRoute {
        route: route.to_string(),
        reason: e.to_string(),
    }
}

impl Route {
    /// Compiles the tree; the root must name a receiver.
    pub fn compile(config: &RouteConfig) -> Result<Self, RouteError> {
        let root = Route {
            id: String::new(),
            receiver: String::new(),
            matchers: vec![],
            continue_matching: false,
            group_by: Some(vec!["model".into(), "type".into()]),
            group_wait_ms: DEFAULT_GROUP_WAIT_MS,
            group_interval_ms: DEFAULT_GROUP_INTERVAL_MS,
            repeat_interval_ms: DEFAULT_REPEAT_INTERVAL_MS,
            escalation: None,
            routes: vec![],
        };
        if config.receiver.as_deref().unwrap_or("").is_empty() {
            return Err(RouteError::BadRoute {
                route: "0".into(),
                reason: "the root route needs a receiver".into(),
            });
        }
        Self::compile_child(config, &root, "0".into())
    }

    fn compile_child(c: &RouteConfig, parent: &Route, id: String) -> Result<Self, RouteError> {
        let matchers = matcher::parse_all(&c.matchers).map_err(in_route(&id))?;
        let group_by = match &c.group_by {
            Some(g) if g.iter().any(|l| l == "...") => None,
            Some(g) => Some(g.clone()),
            None => parent.group_by.clone(),
        };
        let escalation = match &c.escalation {
            Some(e) => {
                if e.receivers.is_empty() || e.after_ms == 0 {
                    return Err(RouteError::BadRoute {
                        route: id,
                        reason: "escalation needs receivers and after_ms > 0".into(),
                    });
                }
                Some(Escalation {
                    after_ms: e.after_ms,
                    receivers: e.receivers.clone(),
                    matchers: matcher::parse_all(&e.matchers).map_err(in_route(&id))?,
                })
            }
            None => None,
        };
        let group_interval_ms = c.group_interval_ms.unwrap_or(parent.group_interval_ms);
        if group_interval_ms == 0 {
            return Err(RouteError::BadRoute {
                route: id,
                reason: "group_interval_ms must be > 0".into(),
            });
        }
        let mut route = Route {
            receiver: c.receiver.clone().unwrap_or_else(|| parent.receiver.clone()),
            matchers,
            continue_matching: c.continue_matching,
            group_by,
            group_wait_ms: c.group_wait_ms.unwrap_or(parent.group_wait_ms),
            group_interval_ms,
            repeat_interval_ms: c.repeat_interval_ms.unwrap_or(parent.repeat_interval_ms),
            escalation,
            routes: vec![],
            id: id.clone(),
        };
        let mut children = Vec::with_capacity(c.routes.len());
        for (i, child) in c.routes.iter().enumerate() {
            children.push(Self::compile_child(child, &route, format!("{id}.{i}"))?);
        }
        route.routes = children;
        Ok(route)
    }

    /// The routes that take an alert with these labels (Alertmanager's
    /// `Route.Match`).
    pub fn matches<'a>(&'a self, labels: &Labels) -> Vec<&'a Route> {
        if !matcher::all_match(&self.matchers, labels) {
            return vec![];
        }
        let mut all = Vec::new();
        for child in &self.routes {
            let m = child.matches(labels);
            if !m.is_empty() {
                all.extend(m);
                if !child.continue_matching {
                    break;
                }
            }
        }
        if all.is_empty() {
            all.push(self);
        }
        all
    }

    /// The group labels of an alert under this route.
    pub fn group_labels(&self, labels: &Labels) -> Labels {
        match &self.group_by {
            None => labels.clone(),
            Some(by) => by
                .iter()
                .filter_map(|k| labels.get(k).map(|v| (k.clone(), v.clone())))
                .collect(),
        }
    }

    /// Every receiver named anywhere in the tree (routes and escalations).
    pub fn receivers(&self) -> Vec<String> {
        let mut out = vec![self.receiver.clone()];
        if let Some(e) = &self.escalation {
            out.extend(e.receivers.iter().cloned());
        }
        for r in &self.routes {
            out.extend(r.receivers());
        }
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sev(s: &str, model: &str) -> Labels {
        [("severity", s), ("model", model), ("type", "HighP99Latency")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn receivers(route: &Route, labels: &Labels) -> Vec<String> {
        route.matches(labels).iter().map(|r| r.receiver.clone()).collect()
    }

    #[test]
    fn design_defaults_route_by_severity() {
        let r = Route::compile(&RouteConfig::design_defaults()).unwrap();
        assert_eq!(receivers(&r, &sev("critical", "a")), ["pagerduty", "email", "slack"]);
        assert_eq!(receivers(&r, &sev("high", "a")), ["pagerduty", "email", "slack"]);
        assert_eq!(receivers(&r, &sev("medium", "a")), ["slack"]);
        assert_eq!(receivers(&r, &sev("low", "a")), ["slack-info"]);
        assert_eq!(r.receivers(), ["email", "pagerduty", "slack", "slack-info"]);
    }

    #[test]
    fn first_match_wins_without_continue_and_timings_inherit() {
        let cfg: RouteConfig = toml_route(
            r#"
            receiver = "default"
            group_wait_ms = 1000
            [[routes]]
            receiver = "fraud-team"
            matchers = ['model="fraud"']
            group_by = ["..."]
            [[routes.routes]]
            receiver = "fraud-oncall"
            matchers = ['severity!~"low|medium"']
            repeat_interval_ms = 60000
            [[routes]]
            receiver = "never"
            matchers = ['model=~"fr.*"']
            "#,
        );
        let r = Route::compile(&cfg).unwrap();
        assert_eq!(receivers(&r, &sev("critical", "fraud")), ["fraud-oncall"]);
        assert_eq!(receivers(&r, &sev("low", "fraud")), ["fraud-team"]);
        assert_eq!(receivers(&r, &sev("low", "churn")), ["default"]);
        let leaf = r.matches(&sev("critical", "fraud"))[0];
        assert_eq!(leaf.id, "0.0.0");
        assert_eq!(leaf.group_wait_ms, 1000);
        assert_eq!(leaf.group_interval_ms, DEFAULT_GROUP_INTERVAL_MS);
        assert_eq!(leaf.repeat_interval_ms, 60000);
        assert_eq!(leaf.group_by, None);
    }

    #[test]
    fn bad_matcher_names_the_route() {
        let mut cfg = RouteConfig::design_defaults();
        cfg.routes[1].matchers = vec!["severity=~(".into()];
        let e = Route::compile(&cfg).unwrap_err().to_string();
        assert!(e.starts_with("route 0.1: bad matcher"), "{e}");
    }

    fn toml_route(s: &str) -> RouteConfig {
        use figment::providers::{Format, Toml};
        figment::Figment::from(Toml::string(s)).extract().unwrap()
    }
}
