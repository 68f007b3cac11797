//! Operator parameters: the `params` table of the pipeline file.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::Error;

/// The operator's `params` table from the pipeline file (a JSON object), plus
/// where this instance runs.
///
/// Read single values with [`Params::get`] / [`Params::get_or`], or
/// deserialize the whole table into your own struct with
/// [`Params::deserialize`] (that is what `#[filter(params = MyParams)]` does).
///
/// ```
/// use sluice_sdk::Params;
/// let p = Params::parse(r#"{"max_fare": 250.0, "name": "x"}"#).unwrap();
/// assert_eq!(p.get::<f64>("max_fare").unwrap(), Some(250.0));
/// assert_eq!(p.get_or::<f64>("max_distance", 100.0).unwrap(), 100.0);
/// assert!(p.get::<u32>("name").is_err()); // wrong type: the error names the param
/// ```
#[derive(Clone, Debug, Default)]
pub struct Params {
    map: Map<String, Value>,
    operator: String,
    subtask: u32,
    parallelism: u32,
}

impl Params {
    /// Parse a params JSON object. An empty string means no params.
    pub fn parse(json: &str) -> Result<Params, Error> {
        let json = json.trim();
        if json.is_empty() {
            return Ok(Params {
                parallelism: 1,
                ..Params::default()
            });
        }
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(map)) => Ok(Params {
                map,
                parallelism: 1,
                ..Params::default()
            }),
            Ok(other) => Err(Error::msg(format!(
                "params must be a JSON object, got {}",
                json_kind(&other)
            ))),
            Err(e) => Err(Error::msg(format!("params are not valid JSON: {e}"))),
        }
    }

    pub(crate) fn with_instance(
        mut self,
        operator: String,
        subtask: u32,
        parallelism: u32,
    ) -> Params {
        self.operator = operator;
        self.subtask = subtask;
        self.parallelism = parallelism;
        self
    }

    /// The param called `name` as a `T`: `Ok(None)` if absent (or JSON `null`),
    /// an error naming the param if it has the wrong type.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Error> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => T::deserialize(v)
                .map(Some)
                .map_err(|e| Error::msg(format!("param `{name}`: {e}"))),
        }
    }

    /// The param called `name`, or `default` if absent.
    pub fn get_or<T: DeserializeOwned>(&self, name: &str, default: T) -> Result<T, Error> {
        Ok(self.get(name)?.unwrap_or(default))
    }

    /// The param called `name`; an error if it is absent.
    pub fn require<T: DeserializeOwned>(&self, name: &str) -> Result<T, Error> {
        self.get(name)?
            .ok_or_else(|| Error::msg(format!("missing required param `{name}`")))
    }

    /// The whole params table deserialized into `T` (use `#[serde(default)]`
    /// for optional fields and `#[serde(deny_unknown_fields)]` to catch typos).
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, Error> {
        T::deserialize(&Value::Object(self.map.clone()))
            .map_err(|e| Error::msg(format!("invalid params: {e}")))
    }

    /// The params as a JSON object.
    pub fn as_json(&self) -> &Map<String, Value> {
        &self.map
    }

    /// The operator's name in the pipeline file (empty in tests unless set).
    pub fn operator(&self) -> &str {
        &self.operator
    }

    /// Index of this parallel instance, from 0.
    pub fn subtask(&self) -> u32 {
        self.subtask
    }

    /// Number of parallel instances of this operator.
    pub fn parallelism(&self) -> u32 {
        self.parallelism
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
