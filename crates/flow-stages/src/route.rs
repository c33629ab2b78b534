//! `route`: sends each item to the ports whose jq condition holds.

use flow_core::{
    BuildContext, ConfigError, Expr, Output, Port, Ports, Stage, StageError, StageKind,
    StageOptions, StageType, Transform, Value,
};
use schemars::JsonSchema;
use serde::Deserialize;

/// The port that receives what no route took.
pub const UNMATCHED: &str = "_unmatched";

/// The most routes one stage may have.
const MAX_ROUTES: usize = 256;

/// Sends each item to named output ports by jq conditions: read a port
/// with `inputs: [STAGE.PORT]`. Each condition is true when its first
/// output is anything but `false` and `null`. Items no route took go to the
/// port `_unmatched`; when nothing reads it, they are filtered out
/// (counted as items in, not out). Every other port must be read. An
/// expression that fails on an item fails that item (`on_error` decides).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteOptions {
    /// Port name → condition (a jq expression), tried in this order, e.g.
    /// `valid: '.email | test("@")'`. A port name is letters, digits, `_`
    /// and `-`, and does not start with `_`.
    pub routes: serde_json::Map<String, serde_json::Value>,
    /// `first` (the default): an item goes to the first route whose
    /// condition holds. `all`: to every route whose condition holds (a copy
    /// each).
    #[serde(default)]
    pub mode: Mode,
}

/// Which routes take an item.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The first route whose condition holds.
    #[default]
    First,
    /// Every route whose condition holds.
    All,
}

struct Route {
    routes: Vec<(Port, Expr)>,
    unmatched: Port,
    all: bool,
}

impl Transform for Route {
    fn interruptible(&self) -> bool {
        true
    }

    fn apply(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError> {
        let mut matched = false;
        for (port, expr) in &self.routes {
            let holds = expr
                .first(input.clone())?
                .is_some_and(|v| !matches!(v, Value::Null | Value::Bool(false)));
            if holds {
                out.emit_to(*port, input.clone());
                matched = true;
                if !self.all {
                    break;
                }
            }
        }
        if !matched {
            out.emit_to(self.unmatched, input.clone());
        }
        Ok(())
    }
}

/// Whether `name` may name a route's port.
fn valid_port_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl StageOptions for RouteOptions {
    fn ports(&self) -> Ports {
        Ports {
            names: self
                .routes
                .keys()
                .cloned()
                .chain([UNMATCHED.to_string()])
                .collect(),
            optional: vec![UNMATCHED.to_string()],
            main: false,
        }
    }

    fn build(self, _ctx: &BuildContext) -> Result<Stage, ConfigError> {
        if self.routes.is_empty() {
            return Err(ConfigError::new(
                "routes",
                "needs at least one route: `port: condition`",
            ));
        }
        if self.routes.len() > MAX_ROUTES {
            return Err(ConfigError::new(
                "routes",
                format!(
                    "{} routes; a route stage may have at most {MAX_ROUTES}",
                    self.routes.len()
                ),
            ));
        }
        let mut routes = Vec::with_capacity(self.routes.len());
        for (k, (name, condition)) in self.routes.iter().enumerate() {
            let key = format!("routes.{name}");
            if !valid_port_name(name) {
                return Err(ConfigError::new(
                    key,
                    "a port name is letters, digits, `_` and `-`, and does not start with `_` (`_unmatched` is the port of what no route took)",
                ));
            }
            let Some(code) = condition.as_str() else {
                return Err(ConfigError::new(
                    key,
                    "a condition is a jq expression in a string, e.g. '.amount > 100'",
                ));
            };
            let expr = Expr::compile(code).map_err(|e| ConfigError::expr(key, e))?;
            routes.push((Port(k as u32), expr));
        }
        let unmatched = Port(routes.len() as u32);
        let all = self.mode == Mode::All;
        Ok(Stage::transform(move || Route {
            routes: routes.clone(),
            unmatched,
            all,
        }))
    }
}

flow_core::inventory::submit! {
    StageType::new::<RouteOptions>(
        "route",
        StageKind::Processor,
        "Sends each item to named ports by jq conditions (read one as `inputs: [STAGE.PORT]`).",
        "- name: triage\n  type: route\n  with:\n    mode: first\n    routes:\n      big: '.value > 100'\n      passing: '.score >= 50'\n- name: keep\n  type: map\n  inputs: [triage.big, triage.passing]\n  with: { expr: '.kept = true' }\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_core::value::{get, int, object};

    fn route(mode: Mode) -> Route {
        let options: RouteOptions = serde_json::from_value(serde_json::json!({
            "routes": {"small": ".n < 10", "even": ".n % 2 == 0"},
        }))
        .unwrap();
        assert_eq!(
            options.ports().names,
            ["small", "even", "_unmatched"],
            "ports in the file's order"
        );
        let Ok(Stage::Workers(make)) = options.build(&ctx()) else {
            panic!("a transform")
        };
        drop(make);
        Route {
            routes: vec![
                (Port(0), Expr::compile(".n < 10").unwrap()),
                (Port(1), Expr::compile(".n % 2 == 0").unwrap()),
            ],
            unmatched: Port(2),
            all: mode == Mode::All,
        }
    }

    fn ctx() -> BuildContext {
        BuildContext {
            stage: "r".into(),
            workers: 1,
            base_dir: ".".into(),
            timeout: None,
        }
    }

    fn ports_of(r: &mut Route, n: i64) -> Vec<u32> {
        let mut out = Output::new();
        r.apply(&object([("n", int(n))]), &mut out).unwrap();
        let (main, routed) = out.outputs_mut();
        assert!(main.is_empty(), "nothing on the main output");
        routed
            .iter()
            .map(|(p, item)| {
                assert_eq!(get(&item.value, "n").cloned(), Some(int(n)));
                p.0
            })
            .collect()
    }

    #[test]
    fn first_takes_the_first_route_that_holds_and_all_takes_each() {
        let mut first = route(Mode::First);
        assert_eq!(ports_of(&mut first, 4), [0]);
        assert_eq!(ports_of(&mut first, 12), [1]);
        assert_eq!(ports_of(&mut first, 13), [2]);
        let mut all = route(Mode::All);
        assert_eq!(ports_of(&mut all, 4), [0, 1]);
        assert_eq!(ports_of(&mut all, 3), [0]);
        assert_eq!(ports_of(&mut all, 13), [2]);
    }

    #[test]
    fn an_expression_error_is_the_items_error() {
        let mut r = Route {
            routes: vec![(Port(0), Expr::compile(".n | ascii_downcase").unwrap())],
            unmatched: Port(1),
            all: false,
        };
        let mut out = Output::new();
        let err = r.apply(&object([("n", int(1))]), &mut out).unwrap_err();
        assert!(err.message().contains("cannot"), "{err}");
    }

    #[test]
    fn bad_options_name_their_key() {
        let build = |routes: serde_json::Value| {
            let options: RouteOptions =
                serde_json::from_value(serde_json::json!({ "routes": routes })).unwrap();
            options.build(&ctx()).err().map(|e| (e.key, e.message))
        };
        assert_eq!(build(serde_json::json!({})).unwrap().0, "routes");
        assert_eq!(
            build(serde_json::json!({"_x": "true"})).unwrap().0,
            "routes._x"
        );
        assert_eq!(
            build(serde_json::json!({"a.b": "true"})).unwrap().0,
            "routes.a.b"
        );
        assert_eq!(
            build(serde_json::json!({"big": 3})).unwrap().0,
            "routes.big"
        );
        let (key, message) = build(serde_json::json!({"big": ".a |"})).unwrap();
        assert_eq!(key, "routes.big");
        assert!(message.starts_with("invalid expression"), "{message}");
        assert_eq!(
            build(serde_json::json!({"ok": ".a", "also-ok_2": "true"})),
            None
        );
    }
}
