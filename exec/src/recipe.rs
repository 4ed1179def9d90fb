//! Recipes: versioned, reviewed scripts with declared parameters.
//!
//! A task that runs a script on many hosts may name a recipe instead of carrying a
//! script: the server binds the task's parameters to the recipe's declaration
//! ([`Recipe::bind`]), records the recipe's name and version with the task, and sends
//! the agent the script, its interpreter and the parameters as environment variables.
//! Recipes come from two places ([`Origin`]): the ones shipped in the workspace's
//! `recipes/` directory, embedded in the binary at compile time ([`shipped`]), and the
//! ones users submit through the API as JSON ([`from_json`]), versioned by the store.
//! This module parses and checks both; it keeps nothing and does no I/O.
//!
//! # Files
//!
//! A shipped recipe is a directory `recipes/<name>/` holding exactly two files:
//! `recipe.toml` and the script it names. Names of files and directories starting with
//! `.` are ignored; `recipes/` may hold other plain files (documentation).
//!
//! ```toml
//! name = "redis-install"   # the directory's name
//! version = 3              # integer >= 1, bumped on every reviewed change
//! description = "Install Redis from the distribution packages"
//! interpreter = "bash"     # bash | sh | python3
//! script = "install.sh"    # a file next to recipe.toml
//!
//! [[params]]
//! name = "port"            # [a-z][a-z0-9_]*, at most 64 characters, unique
//! type = "int"             # string | int | bool | enum
//! default = "6379"         # optional, always a string, valid for the type
//! required = false         # optional, false when absent
//! description = "TCP port" # optional
//!
//! [[params]]
//! name = "maxmemory_policy"
//! type = "enum"
//! choices = ["noeviction", "allkeys-lru"]  # only, and then required, for enum
//! default = "noeviction"
//! ```
//!
//! Rules, each checked by [`Recipe::parse`] (every problem is reported, not the first):
//!
//! - Unknown fields are errors (a typo is not silently a default). `name`, `version`,
//!   `description`, `interpreter` and `script` are required; `params` may be absent.
//! - `name`: `[a-z0-9][a-z0-9-]*`, at most [`MAX_NAME_LEN`] bytes.
//! - `version`: 1 to 2³²−1.
//! - `description`: not blank, at most [`MAX_DESCRIPTION_BYTES`]; the same limit holds
//!   for a parameter's description, which may be empty.
//! - `interpreter`: one of [`INTERPRETERS`].
//! - `script` (in `recipe.toml`): a plain file name, `[A-Za-z0-9_][A-Za-z0-9._-]*`, not
//!   `recipe.toml`. The script itself: not blank, no NUL byte, at most
//!   [`MAX_SCRIPT_BYTES`].
//! - Parameters: at most [`MAX_PARAMS`]; names `[a-z][a-z0-9_]*`, at most
//!   [`MAX_NAME_LEN`] bytes, unique; `choices` only with `type = "enum"`, and there not
//!   empty, each choice non-empty, unique, without NUL; a default must be a valid value
//!   of its type; a required parameter has no default (it would never be used).
//!
//! # Values
//!
//! Every value, given or default, is checked against its type and normalised:
//!
//! - `int`: a decimal 64-bit integer, optionally signed; passed in canonical form
//!   (`007` becomes `7`, so a shell never reads it as octal).
//! - `bool`: `true`, `false`, `yes`, `no`, `on`, `off`, `1` or `0`, in any case; passed
//!   as `true` or `false`.
//! - `enum`: exactly one of the choices.
//! - `string`: anything without a NUL byte, at most [`MAX_VALUE_BYTES`]; the empty string
//!   does not satisfy `required`.
//!
//! # How a script gets its parameters
//!
//! Only as environment variables: parameter `port` is `MINOS_PARAM_PORT`
//! ([`ENV_PREFIX`] plus the name in upper case). Values are never substituted into the
//! script text, so no value can inject code; the script reads and re-checks them
//! (`"${MINOS_PARAM_PORT}"` in shell, `os.environ` in Python). Every declared parameter
//! is set, to the empty string when it is optional, has no default and was not given:
//! a script sees each of its parameters and never inherits one from elsewhere.
//!
//! # User recipes
//!
//! Submitted as JSON: `{"name", "description", "interpreter", "params": [...],
//! "script"}` where each parameter has the fields of a `[[params]]` table above and
//! `script` is the script's text. The store assigns the version. The read-only fields of
//! [`Recipe::to_json`] (`version`, `origin`, `script_sha256`) are accepted and ignored,
//! so a recipe read from the API can be sent back edited; any other field is an error.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/recipes.rs"));
}

/// The interpreters a recipe may name; the agent knows the same three.
pub const INTERPRETERS: &[&str] = &["bash", "sh", "python3"];
/// The longest recipe or parameter name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// The largest script, in bytes.
pub const MAX_SCRIPT_BYTES: usize = 256 << 10;
/// The longest description (of a recipe or a parameter), in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 4 << 10;
/// The most parameters a recipe declares.
pub const MAX_PARAMS: usize = 100;
/// The longest value (or enum choice) of a parameter, in bytes. Linux refuses a single
/// environment string over 128 KiB; this leaves room.
pub const MAX_VALUE_BYTES: usize = 64 << 10;
/// Parameter `port` reaches the script as `MINOS_PARAM_PORT`.
pub const ENV_PREFIX: &str = "MINOS_PARAM_";

/// The file of a shipped recipe directory that declares it.
const RECIPE_FILE: &str = "recipe.toml";
/// Values shown in error messages are cut to this many characters.
const SHOWN_VALUE_CHARS: usize = 64;

/// The type of a parameter, which decides the values it accepts (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamType {
    String,
    Int,
    Bool,
    /// One of these choices (never empty).
    Enum(Vec<String>),
}

impl ParamType {
    /// The name used in `recipe.toml` and JSON: `string`, `int`, `bool` or `enum`.
    pub fn name(&self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Int => "int",
            ParamType::Bool => "bool",
            ParamType::Enum(_) => "enum",
        }
    }

    /// `value` in normal form, or what is wrong with it (a phrase that may quote it).
    fn check(&self, value: &str) -> Result<String, String> {
        match self {
            ParamType::String => {
                if value.contains('\0') {
                    Err("the value contains a NUL byte".into())
                } else if value.len() > MAX_VALUE_BYTES {
                    Err(format!(
                        "the value is {} bytes, more than {MAX_VALUE_BYTES}",
                        value.len()
                    ))
                } else {
                    Ok(value.to_string())
                }
            }
            ParamType::Int => value
                .parse::<i64>()
                .map(|n| n.to_string())
                .map_err(|_| format!("{} is not an integer", shown(value))),
            ParamType::Bool => match value.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Ok("true".into()),
                "false" | "no" | "off" | "0" => Ok("false".into()),
                _ => Err(format!("{} is not a boolean (true or false)", shown(value))),
            },
            ParamType::Enum(choices) => {
                if choices.iter().any(|c| c == value) {
                    Ok(value.to_string())
                } else {
                    let list: Vec<String> = choices.iter().map(|c| format!("{c:?}")).collect();
                    Err(format!(
                        "{} is not one of {}",
                        shown(value),
                        list.join(", ")
                    ))
                }
            }
        }
    }
}

/// A declared parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// `[a-z][a-z0-9_]*`; the script reads it as `MINOS_PARAM_<NAME>`.
    pub name: String,
    pub kind: ParamType,
    /// Used when the parameter is not given; valid for `kind` and in normal form.
    /// Never set on a required parameter.
    pub default: Option<String>,
    /// The parameter must be given, and a string one non-empty.
    pub required: bool,
    pub description: String,
}

impl Param {
    /// The environment variable the script reads: `MINOS_PARAM_` + the name in upper case.
    pub fn env_name(&self) -> String {
        format!("{ENV_PREFIX}{}", self.name.to_ascii_uppercase())
    }
}

/// Where a recipe comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Embedded from `recipes/` at compile time; reviewed with the code.
    Shipped,
    /// Submitted through the API.
    User,
}

impl Origin {
    /// `shipped` or `user`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Shipped => "shipped",
            Origin::User => "user",
        }
    }
}

/// A checked recipe: every rule of the module docs holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub name: String,
    /// Recorded with every use, so a run can be traced to the exact script.
    pub version: u32,
    pub description: String,
    /// One of [`INTERPRETERS`].
    pub interpreter: String,
    /// In declaration order.
    pub params: Vec<Param>,
    /// The script's text.
    pub script: String,
    pub origin: Origin,
}

/// The parameters of one use of a recipe, checked and completed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bound {
    /// Every declared parameter with its effective value (given, else default, else
    /// empty), in normal form: what to record with the task.
    pub params: BTreeMap<String, String>,
    /// The same values as environment variables for the agent, sorted by name.
    pub env: Vec<(String, String)>,
}

/// One thing wrong with the parameters given to [`Recipe::bind`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParamProblem {
    /// Given, but not declared by the recipe.
    Unknown { name: String },
    /// Required, but not given (or, for a string, given empty).
    Missing { name: String },
    /// Given with a value its type refuses; `reason` may quote the value, except for
    /// strings (which may be secrets).
    BadValue { name: String, reason: String },
}

impl ParamProblem {
    /// The parameter concerned.
    pub fn name(&self) -> &str {
        match self {
            ParamProblem::Unknown { name }
            | ParamProblem::Missing { name }
            | ParamProblem::BadValue { name, .. } => name,
        }
    }
}

impl fmt::Display for ParamProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamProblem::Unknown { name } => write!(f, "unknown parameter {}", shown(name)),
            ParamProblem::Missing { name } => {
                write!(f, "parameter {} is required", shown(name))
            }
            ParamProblem::BadValue { name, reason } => {
                write!(f, "parameter {}: {reason}", shown(name))
            }
        }
    }
}

/// Why a recipe or the parameters of one of its uses were refused. Every message starts
/// with the recipe concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecipeError {
    /// The text is not a recipe: not TOML or JSON, an unknown or missing field, a field
    /// of the wrong type.
    #[error("recipe {recipe}: {message}")]
    Malformed { recipe: String, message: String },
    /// The declaration breaks a rule of the format; each problem names its field or
    /// parameter.
    #[error("recipe {recipe}: {}", problems.join("; "))]
    Invalid {
        recipe: String,
        problems: Vec<String>,
    },
    /// The parameters given for one use do not fit the declaration.
    #[error("recipe {recipe}: {}", join(problems))]
    Params {
        recipe: String,
        problems: Vec<ParamProblem>,
    },
    /// A directory of `recipes/` is not laid out as a recipe. Only shipped recipes can
    /// have this, and a unit test keeps them free of it.
    #[error("recipes/{dir}: {message}")]
    Layout { dir: String, message: String },
}

fn join(problems: &[ParamProblem]) -> String {
    let parts: Vec<String> = problems.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

/// `recipe.toml`, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: String,
    version: i64,
    description: String,
    interpreter: String,
    /// The script's file name.
    script: String,
    #[serde(default)]
    params: Vec<RawParam>,
}

/// A parameter, as written in `recipe.toml` or JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    choices: Option<Vec<String>>,
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    description: String,
}

/// A user recipe, as submitted. Parameters are read one by one so that an error can say
/// which one is wrong.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: String,
    description: String,
    interpreter: String,
    #[serde(default)]
    params: Vec<Value>,
    /// The script's text.
    script: String,
    // Read-only fields of `Recipe::to_json`, ignored.
    #[serde(default, rename = "version")]
    _version: Option<IgnoredAny>,
    #[serde(default, rename = "origin")]
    _origin: Option<IgnoredAny>,
    #[serde(default, rename = "script_sha256")]
    _script_sha256: Option<IgnoredAny>,
}

/// The parts of a declaration both sources share, before checking.
struct Decl {
    name: String,
    version: i64,
    description: String,
    interpreter: String,
    params: Vec<RawParam>,
}

impl Recipe {
    /// Parses a `recipe.toml` text plus its script text (shipped or user-submitted) and
    /// checks every rule of the module docs.
    pub fn parse(toml_text: &str, script: String, origin: Origin) -> Result<Recipe, RecipeError> {
        let raw = parse_file(toml_text)?;
        let script_problem = check_script_file_name(&raw.script);
        build(raw.into_decl(), script, origin, script_problem)
    }

    /// Checks `given` against the declaration, fills in defaults and returns the values
    /// and the environment for the script. Every problem is reported: unknown
    /// parameters, missing required ones, values their type refuses.
    pub fn bind(&self, given: &BTreeMap<String, String>) -> Result<Bound, RecipeError> {
        let mut problems = Vec::new();
        for name in given.keys() {
            if !self.params.iter().any(|p| &p.name == name) {
                problems.push(ParamProblem::Unknown { name: name.clone() });
            }
        }
        let mut params = BTreeMap::new();
        for p in &self.params {
            let value = match (given.get(&p.name), &p.default) {
                (Some(v), _) => match p.kind.check(v) {
                    Ok(v) => v,
                    Err(reason) => {
                        problems.push(ParamProblem::BadValue {
                            name: p.name.clone(),
                            reason,
                        });
                        continue;
                    }
                },
                (None, Some(d)) => d.clone(),
                (None, None) => String::new(),
            };
            if p.required && value.is_empty() {
                problems.push(ParamProblem::Missing {
                    name: p.name.clone(),
                });
                continue;
            }
            params.insert(p.name.clone(), value);
        }
        if !problems.is_empty() {
            return Err(RecipeError::Params {
                recipe: self.name.clone(),
                problems,
            });
        }
        let mut env: Vec<(String, String)> = self
            .params
            .iter()
            .filter_map(|p| Some((p.env_name(), params.get(&p.name)?.clone())))
            .collect();
        env.sort();
        Ok(Bound { params, env })
    }

    /// The lowercase hex SHA-256 of the script: identifies the exact text run.
    pub fn script_sha256(&self) -> String {
        format!("{:x}", Sha256::digest(self.script.as_bytes()))
    }

    /// The recipe for the API: `name`, `version`, `description`, `interpreter`, `origin`,
    /// `params` (each `{name, type, choices (enum only), default (when set), required,
    /// description}`), `script_sha256`, and `script` when `with_script`.
    pub fn to_json(&self, with_script: bool) -> Value {
        let params: Vec<Value> = self
            .params
            .iter()
            .map(|p| {
                let mut o = serde_json::Map::new();
                o.insert("name".into(), json!(p.name));
                o.insert("type".into(), json!(p.kind.name()));
                if let ParamType::Enum(choices) = &p.kind {
                    o.insert("choices".into(), json!(choices));
                }
                if let Some(d) = &p.default {
                    o.insert("default".into(), json!(d));
                }
                o.insert("required".into(), json!(p.required));
                o.insert("description".into(), json!(p.description));
                Value::Object(o)
            })
            .collect();
        let mut v = json!({
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "interpreter": self.interpreter,
            "origin": self.origin.as_str(),
            "params": params,
            "script_sha256": self.script_sha256(),
        });
        if with_script && let Value::Object(o) = &mut v {
            o.insert("script".into(), json!(self.script));
        }
        v
    }
}

/// The recipes shipped with this binary, embedded from `recipes/` at compile time, in
/// directory order. An error here is a bug of the build, which a unit test catches.
pub fn shipped() -> Result<Vec<Recipe>, RecipeError> {
    embedded::DIRS
        .iter()
        .map(|(dir, files)| shipped_one(dir, files))
        .collect()
}

/// A user recipe submitted through the API (see the module docs), at the `version` the
/// store assigns.
pub fn from_json(v: &Value, version: u32) -> Result<Recipe, RecipeError> {
    let label = || label_of(v.get("name").and_then(Value::as_str));
    let raw = RawUser::deserialize(v).map_err(|e| RecipeError::Malformed {
        recipe: label(),
        message: e.to_string(),
    })?;
    let mut params = Vec::with_capacity(raw.params.len());
    for (i, p) in raw.params.iter().enumerate() {
        let param = RawParam::deserialize(p).map_err(|e| {
            let which = match p.get("name").and_then(Value::as_str) {
                Some(n) => format!("parameter {}", shown(n)),
                None => format!("parameter #{}", i + 1),
            };
            RecipeError::Malformed {
                recipe: label(),
                message: format!("{which}: {e}"),
            }
        })?;
        params.push(param);
    }
    let decl = Decl {
        name: raw.name,
        version: i64::from(version),
        description: raw.description,
        interpreter: raw.interpreter,
        params,
    };
    build(decl, raw.script, Origin::User, None)
}

impl RawFile {
    fn into_decl(self) -> Decl {
        Decl {
            name: self.name,
            version: self.version,
            description: self.description,
            interpreter: self.interpreter,
            params: self.params,
        }
    }
}

fn parse_file(toml_text: &str) -> Result<RawFile, RecipeError> {
    toml::from_str(toml_text).map_err(|e| {
        let label = toml::from_str::<toml::Table>(toml_text)
            .ok()
            .and_then(|t| t.get("name").and_then(|n| n.as_str()).map(label_of_str))
            .unwrap_or_else(|| label_of(None));
        let message = match e.span() {
            Some(span) => {
                let line = toml_text[..span.start.min(toml_text.len())]
                    .matches('\n')
                    .count()
                    + 1;
                format!("recipe.toml line {line}: {}", e.message())
            }
            None => format!("recipe.toml: {}", e.message()),
        };
        RecipeError::Malformed {
            recipe: label,
            message,
        }
    })
}

fn shipped_one(dir: &str, files: &[(&str, &str)]) -> Result<Recipe, RecipeError> {
    let layout = |message: String| RecipeError::Layout {
        dir: dir.to_string(),
        message,
    };
    let file = |name: &str| {
        files
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, text)| *text)
    };
    let toml_text = file(RECIPE_FILE).ok_or_else(|| layout(format!("no {RECIPE_FILE}")))?;
    let raw = parse_file(toml_text)?;
    let script_problem = check_script_file_name(&raw.script);
    let script = if script_problem.is_none() {
        file(&raw.script).ok_or_else(|| {
            layout(format!(
                "{RECIPE_FILE} names the script {}, which is not in the directory",
                shown(&raw.script)
            ))
        })?
    } else {
        ""
    };
    if let Some((stray, _)) = files
        .iter()
        .find(|(n, _)| *n != RECIPE_FILE && *n != raw.script)
    {
        return Err(layout(format!(
            "{} is neither {RECIPE_FILE} nor the script it names",
            shown(stray)
        )));
    }
    let recipe = build(
        raw.into_decl(),
        script.to_string(),
        Origin::Shipped,
        script_problem,
    )?;
    if recipe.name != dir {
        return Err(layout(format!(
            "{RECIPE_FILE} names the recipe {}: a recipe's directory has its name",
            shown(&recipe.name)
        )));
    }
    Ok(recipe)
}

/// Checks a declaration and its script; `extra` is a problem found earlier.
fn build(
    decl: Decl,
    script: String,
    origin: Origin,
    extra: Option<String>,
) -> Result<Recipe, RecipeError> {
    let mut problems: Vec<String> = extra.into_iter().collect();

    if !valid_recipe_name(&decl.name) {
        problems.push(format!(
            "name {} must be [a-z0-9][a-z0-9-]*, at most {MAX_NAME_LEN} characters",
            shown(&decl.name)
        ));
    }
    let version = match u32::try_from(decl.version) {
        Ok(v) if v >= 1 => v,
        _ => {
            problems.push(format!(
                "version {} must be between 1 and {}",
                decl.version,
                u32::MAX
            ));
            0
        }
    };
    if let Some(p) = check_description("description", &decl.description, true) {
        problems.push(p);
    }
    if !INTERPRETERS.contains(&decl.interpreter.as_str()) {
        problems.push(format!(
            "interpreter {} is not one of {}",
            shown(&decl.interpreter),
            INTERPRETERS.join(", ")
        ));
    }
    if script.trim().is_empty() {
        problems.push("the script is empty".into());
    } else if script.len() > MAX_SCRIPT_BYTES {
        problems.push(format!(
            "the script is {} bytes, more than {MAX_SCRIPT_BYTES}",
            script.len()
        ));
    } else if script.contains('\0') {
        problems.push("the script contains a NUL byte".into());
    }

    if decl.params.len() > MAX_PARAMS {
        problems.push(format!(
            "{} parameters, more than {MAX_PARAMS}",
            decl.params.len()
        ));
    }
    let mut seen = BTreeSet::new();
    let mut params = Vec::with_capacity(decl.params.len());
    for raw in decl.params {
        let mut bad =
            |what: String| problems.push(format!("parameter {}: {what}", shown(&raw.name)));
        if !valid_param_name(&raw.name) {
            bad(format!(
                "the name must be [a-z][a-z0-9_]*, at most {MAX_NAME_LEN} characters"
            ));
        } else if !seen.insert(raw.name.clone()) {
            bad("declared twice".into());
        }
        if let Some(p) = check_description("the description", &raw.description, false) {
            bad(p);
        }
        let kind = match (raw.kind.as_str(), raw.choices) {
            ("string", None) => Some(ParamType::String),
            ("int", None) => Some(ParamType::Int),
            ("bool", None) => Some(ParamType::Bool),
            ("enum", Some(choices)) => {
                if let Some(p) = check_choices(&choices) {
                    bad(p);
                    None
                } else {
                    Some(ParamType::Enum(choices))
                }
            }
            ("enum", None) => {
                bad("an enum needs choices".into());
                None
            }
            ("string" | "int" | "bool", Some(_)) => {
                bad(format!("choices are only for an enum, not a {}", raw.kind));
                None
            }
            (other, _) => {
                bad(format!(
                    "type {} is not one of string, int, bool, enum",
                    shown(other)
                ));
                None
            }
        };
        if raw.required && raw.default.is_some() {
            bad("required with a default: the default would never be used".into());
        }
        let default = match (&kind, raw.default) {
            (Some(kind), Some(d)) => match kind.check(&d) {
                Ok(d) => Some(d),
                Err(reason) => {
                    bad(format!("default: {reason}"));
                    None
                }
            },
            (_, d) => d,
        };
        if let Some(kind) = kind {
            params.push(Param {
                name: raw.name,
                kind,
                default,
                required: raw.required,
                description: raw.description,
            });
        }
    }

    if !problems.is_empty() {
        return Err(RecipeError::Invalid {
            recipe: label_of_str(&decl.name),
            problems,
        });
    }
    Ok(Recipe {
        name: decl.name,
        version,
        description: decl.description,
        interpreter: decl.interpreter,
        params,
        script,
        origin,
    })
}

fn check_script_file_name(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name != RECIPE_FILE
        && name.len() <= 255;
    (!ok).then(|| {
        format!(
            "script {} must be a file name next to {RECIPE_FILE}: [A-Za-z0-9_][A-Za-z0-9._-]*",
            shown(name)
        )
    })
}

fn check_description(what: &str, text: &str, required: bool) -> Option<String> {
    if required && text.trim().is_empty() {
        Some(format!("{what} is empty"))
    } else if text.len() > MAX_DESCRIPTION_BYTES {
        Some(format!(
            "{what} is {} bytes, more than {MAX_DESCRIPTION_BYTES}",
            text.len()
        ))
    } else {
        None
    }
}

fn check_choices(choices: &[String]) -> Option<String> {
    if choices.is_empty() {
        return Some("an enum needs at least one choice".into());
    }
    let mut seen = BTreeSet::new();
    for c in choices {
        if c.is_empty() {
            return Some("a choice is empty".into());
        }
        if c.contains('\0') || c.len() > MAX_VALUE_BYTES {
            return Some(format!("choice {} has a NUL byte or is too long", shown(c)));
        }
        if !seen.insert(c.as_str()) {
            return Some(format!("choice {} is listed twice", shown(c)));
        }
    }
    None
}

/// `[a-z0-9][a-z0-9-]*`, at most [`MAX_NAME_LEN`] bytes.
fn valid_recipe_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= MAX_NAME_LEN
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `[a-z][a-z0-9_]*`, at most [`MAX_NAME_LEN`] bytes.
fn valid_param_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= MAX_NAME_LEN
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// How an error names a recipe: its name when valid, else the name quoted.
fn label_of_str(name: &str) -> String {
    if valid_recipe_name(name) {
        name.to_string()
    } else {
        shown(name)
    }
}

fn label_of(name: Option<&str>) -> String {
    name.map_or_else(|| "(unnamed)".to_string(), label_of_str)
}

/// `s` quoted and escaped for a message, cut to [`SHOWN_VALUE_CHARS`] characters.
fn shown(s: &str) -> String {
    if s.chars().count() <= SHOWN_VALUE_CHARS {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(SHOWN_VALUE_CHARS).collect();
        format!("{cut:?}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output, Stdio};

    /// `PATH` the agent gives scripts (`agent::exec::DEFAULT_PATH`).
    const AGENT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    fn recipes_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("recipes")
    }

    fn all_shipped() -> Vec<Recipe> {
        shipped().unwrap_or_else(|e| panic!("{e}"))
    }

    fn get(name: &str) -> Recipe {
        all_shipped()
            .into_iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no shipped recipe {name}"))
    }

    fn given(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn bind(r: &Recipe, pairs: &[(&str, &str)]) -> Bound {
        r.bind(&given(pairs)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A directory that any user may read, holding the script as `script`.
    fn script_dir(r: &Recipe) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let path = dir.path().join("script");
        let mut f = std::fs::File::create(&path).expect("create script");
        f.write_all(r.script.as_bytes()).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        (dir, path)
    }

    /// Checks the script's syntax with its real interpreter, without running it.
    fn check_syntax(r: &Recipe) -> Result<(), String> {
        let (_dir, path) = script_dir(r);
        let out = match r.interpreter.as_str() {
            "bash" | "sh" => Command::new(&r.interpreter).arg("-n").arg(&path).output(),
            "python3" => Command::new("python3")
                .args(["-m", "py_compile"])
                .arg(&path)
                .output(),
            other => panic!("unknown interpreter {other}"),
        }
        .unwrap_or_else(|e| panic!("{}: cannot run: {e}", r.interpreter));
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn is_root() -> bool {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    }

    /// Runs the recipe like the agent: its interpreter on the script file, a clean
    /// environment plus `env`, stdin from /dev/null. With `unprivileged` and a root test
    /// process, as nobody (65534) through setpriv (util-linux), when it is installed.
    fn run(r: &Recipe, env: &[(String, String)], path_var: &str, unprivileged: bool) -> Output {
        let (_dir, script) = script_dir(r);
        let setpriv = Path::new("/usr/bin/setpriv");
        let mut cmd = if unprivileged && is_root() && setpriv.exists() {
            let mut c = Command::new(setpriv);
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
            c.arg(interpreter_path(&r.interpreter));
            c
        } else {
            Command::new(interpreter_path(&r.interpreter))
        };
        cmd.arg(&script)
            .env_clear()
            .env("PATH", path_var)
            .env("HOME", "/")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd.output().expect("run the script")
    }

    /// The interpreter's absolute path, so a test may give the script an empty PATH.
    fn interpreter_path(name: &str) -> PathBuf {
        ["/usr/bin", "/bin", "/usr/local/bin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{name} is not installed"))
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    fn gunzip(path: &Path) -> String {
        let out = Command::new("gzip")
            .arg("-dc")
            .arg(path)
            .output()
            .expect("gzip");
        assert!(out.status.success(), "gzip -dc {}", path.display());
        text(&out.stdout)
    }

    // --- shipped recipes -------------------------------------------------------------

    #[test]
    fn every_shipped_recipe_parses_and_every_directory_is_one() {
        let recipes = all_shipped();
        let names: Vec<&str> = recipes.iter().map(|r| r.name.as_str()).collect();
        let unique: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "duplicate names in {names:?}");

        let mut dirs: Vec<String> = std::fs::read_dir(recipes_dir())
            .expect("recipes/")
            .map(|e| e.expect("entry"))
            .filter(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        dirs.sort();
        assert_eq!(
            names, dirs,
            "recipes/ and the embedded recipes differ: rebuild"
        );

        for expected in [
            "diagnostics",
            "disk-cleanup",
            "kafka-install",
            "logrotate",
            "mysql-install",
            "redis-install",
            "service-restart",
        ] {
            assert!(unique.contains(expected), "{expected} is not shipped");
        }
        for r in &recipes {
            assert_eq!(r.origin, Origin::Shipped);
            if r.interpreter != "python3" {
                assert!(
                    r.script.contains("set -euo pipefail") || r.interpreter == "sh",
                    "{}: a bash recipe starts with set -euo pipefail",
                    r.name
                );
            }
        }
    }

    /// What a version stands for: every field a reviewer reviews.
    fn fingerprint(r: &Recipe) -> String {
        let mut text = format!("{}\n{}\n", r.description, r.interpreter);
        for p in &r.params {
            let choices = match &p.kind {
                ParamType::Enum(c) => c.join(","),
                _ => String::new(),
            };
            let default = p
                .default
                .as_deref()
                .map_or("(none)".into(), |d| format!("={d}"));
            text += &format!(
                "{} {} [{choices}] {default} {} {}\n",
                p.name,
                p.kind.name(),
                p.required,
                p.description
            );
        }
        text += &r.script;
        format!("{:x}", Sha256::digest(text.as_bytes()))[..16].to_string()
    }

    /// The reviewed content of each shipped version. A change to a recipe without a
    /// version bump fails here: bump `version` in its recipe.toml and update its line,
    /// so that a recorded (name, version) always means the same script.
    const PINNED: &[(&str, u32, &str)] = &[
        ("diagnostics", 1, "4d9b2b3b9a5267f6"),
        ("disk-cleanup", 1, "c91d38a307fd1293"),
        ("kafka-install", 1, "63813259ea0d3ced"),
        ("logrotate", 1, "edd3b6a1b35643a6"),
        ("mysql-install", 1, "fdcf1ebbf6e34b61"),
        ("redis-install", 1, "977695e492439991"),
        ("service-restart", 1, "49cdcbacfe556240"),
    ];

    #[test]
    fn a_changed_recipe_has_a_new_version() {
        let recipes = all_shipped();
        let current: Vec<String> = recipes
            .iter()
            .map(|r| {
                format!(
                    "        ({:?}, {}, {:?}),",
                    r.name,
                    r.version,
                    fingerprint(r)
                )
            })
            .collect();
        let table = current.join("\n");
        for r in &recipes {
            let fp = fingerprint(r);
            match PINNED.iter().find(|(n, _, _)| *n == r.name) {
                Some((_, v, pinned)) if *v == r.version && *pinned != fp => panic!(
                    "recipe {} changed without a version bump: bump its version, then PINNED is:\n{table}",
                    r.name
                ),
                Some((_, v, pinned)) if *v == r.version && *pinned == fp => {}
                _ => panic!(
                    "recipe {} version {} is not in PINNED, which should be:\n{table}",
                    r.name, r.version
                ),
            }
        }
        assert_eq!(PINNED.len(), recipes.len(), "PINNED should be:\n{table}");
    }

    #[test]
    fn every_shipped_script_passes_its_interpreters_syntax_check() {
        for r in all_shipped() {
            if let Err(e) = check_syntax(&r) {
                panic!("{} ({}): {e}", r.name, r.interpreter);
            }
        }
    }

    #[test]
    fn the_syntax_check_catches_broken_scripts() {
        for (interpreter, script) in [
            ("bash", "if true; then\n  echo no fi\n"),
            ("sh", "case x in\n"),
            ("python3", "def f(:\n    pass\n"),
        ] {
            let r = user(interpreter, script);
            assert!(
                check_syntax(&r).is_err(),
                "{interpreter} accepted {script:?}"
            );
        }
        for (interpreter, script) in [
            ("bash", "echo ok\n"),
            ("sh", "echo ok\n"),
            ("python3", "print('ok')\n"),
        ] {
            let r = user(interpreter, script);
            assert_eq!(check_syntax(&r), Ok(()), "{interpreter}");
        }
    }

    /// Each script reads exactly its declared parameters, and a fallback it spells out
    /// for running by hand (`${MINOS_PARAM_X-fallback}`) is the declared default.
    #[test]
    fn shipped_scripts_read_exactly_their_declared_params() {
        for r in all_shipped() {
            let declared: BTreeMap<String, &Param> =
                r.params.iter().map(|p| (p.env_name(), p)).collect();
            let mut used = BTreeSet::new();
            let s = r.script.as_str();
            let mut at = 0;
            while let Some(i) = s[at..].find(ENV_PREFIX) {
                let start = at + i;
                let end = s[start..]
                    .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                    .map_or(s.len(), |n| start + n);
                let var = &s[start..end];
                assert!(
                    declared.contains_key(var),
                    "{}: the script reads {var}, which is not declared",
                    r.name
                );
                used.insert(var.to_string());
                let braced = start >= 2 && &s[start - 2..start] == "${";
                let rest = &s[end..];
                let fallback = rest.strip_prefix(":-").or_else(|| rest.strip_prefix('-'));
                if let (true, Some(fb)) = (braced, fallback) {
                    let fb = &fb[..fb.find('}').expect("closing brace")];
                    let default = declared[var].default.as_deref().unwrap_or("");
                    assert_eq!(fb, default, "{}: fallback of {var}", r.name);
                }
                at = end;
            }
            let unused: Vec<&String> = declared.keys().filter(|k| !used.contains(*k)).collect();
            assert!(unused.is_empty(), "{}: never reads {unused:?}", r.name);
        }
    }

    #[test]
    fn diagnostics_runs_unprivileged_on_this_host() {
        let r = get("diagnostics");
        let b = bind(&r, &[("lines", "5")]);
        let out = run(&r, &b.env, AGENT_PATH, true);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
            out.status,
            text(&out.stderr)
        );
        for heading in [
            "== host ==",
            "== uptime and load ==",
            "== memory ==",
            "== disk space ==",
            "== top processes by cpu ==",
            "== kernel messages ==",
            "== failed units ==",
            "== listening sockets ==",
            "== end ==",
        ] {
            assert!(stdout.contains(heading), "no {heading:?} in:\n{stdout}");
        }
    }

    #[test]
    fn diagnostics_survives_a_host_without_tools() {
        // An empty PATH: every external tool is missing, yet the script completes.
        let r = get("diagnostics");
        let b = bind(&r, &[]);
        let empty = tempfile::tempdir().expect("tempdir");
        let path = empty.path().to_str().expect("utf-8 path");
        let out = run(&r, &b.env, path, true);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
        assert!(stdout.contains("== end =="), "{stdout}");
        assert!(stdout.contains("not installed"), "{stdout}");
    }

    #[test]
    fn logrotate_rotates_keeps_and_compresses() {
        let r = get("logrotate");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let write =
            |name: &str, content: &str| std::fs::write(d.join(name), content).expect("write");
        write("app.log", "first\n");
        write("empty.log", "");
        write("other.txt", "not matched\n");
        write("app.log.5", "beyond keep\n");
        // An older compressed generation from an earlier rotation.
        write("app.log.1", "older\n");
        assert!(
            Command::new("gzip")
                .arg(d.join("app.log.1"))
                .status()
                .expect("gzip")
                .success()
        );
        let pattern = format!("{}/*.log", d.display());
        let rotate = |compress: &str| {
            let b = bind(
                &r,
                &[("path", &pattern), ("keep", "2"), ("compress", compress)],
            );
            let out = run(&r, &b.env, AGENT_PATH, false);
            assert!(
                out.status.success(),
                "{}\n{}",
                text(&out.stdout),
                text(&out.stderr)
            );
            text(&out.stdout)
        };

        let stdout = rotate("true");
        assert!(stdout.contains("1 file(s) rotated, 1 skipped"), "{stdout}");
        assert_eq!(
            std::fs::read_to_string(d.join("app.log")).expect("app.log"),
            ""
        );
        assert_eq!(gunzip(&d.join("app.log.1.gz")), "first\n");
        assert_eq!(gunzip(&d.join("app.log.2.gz")), "older\n");
        assert!(
            !d.join("app.log.5").exists(),
            "generations beyond keep are deleted"
        );
        assert!(!d.join("app.log.3.gz").exists());
        assert!(
            !d.join("empty.log.1.gz").exists(),
            "empty files are skipped"
        );
        assert!(
            !d.join("other.txt.1.gz").exists(),
            "only matching files rotate"
        );

        write("app.log", "second\n");
        rotate("false");
        assert_eq!(
            std::fs::read_to_string(d.join("app.log.1")).expect("app.log.1"),
            "second\n"
        );
        assert_eq!(gunzip(&d.join("app.log.2.gz")), "first\n");
        assert!(!d.join("app.log.3.gz").exists(), "keep = 2");
        assert!(!d.join("app.log.1.gz").exists());
        let mut names: Vec<String> = std::fs::read_dir(d)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "app.log",
                "app.log.1",
                "app.log.2.gz",
                "empty.log",
                "other.txt"
            ]
        );
    }

    /// The scripts check their parameters again, before anything else, and stop with a
    /// message naming the variable. They run with an empty PATH: validation uses only
    /// shell builtins, and the root check that follows fails for lack of `id`, so
    /// nothing is ever installed by this test, even as root.
    #[test]
    fn install_scripts_check_their_params_before_acting() {
        let empty = tempfile::tempdir().expect("tempdir");
        let path = empty.path().to_str().expect("utf-8 path");
        /// Parameters given to `bind`.
        type Given<'a> = &'a [(&'a str, &'a str)];
        // (recipe, valid parameters, variable then overridden, its bad value)
        let cases: &[(&str, Given, &str, &str)] = &[
            (
                "redis-install",
                &[("maxmemory", "1gb")],
                "MINOS_PARAM_PORT",
                "99999",
            ),
            (
                "redis-install",
                &[("maxmemory", "1gb")],
                "MINOS_PARAM_BIND",
                "0.0.0.0;reboot",
            ),
            (
                "redis-install",
                &[("maxmemory", "1gb")],
                "MINOS_PARAM_MAXMEMORY",
                "lots",
            ),
            (
                "redis-install",
                &[("maxmemory", "1gb")],
                "MINOS_PARAM_APPENDONLY",
                "maybe",
            ),
            ("mysql-install", &[], "MINOS_PARAM_FLAVOR", "postgres"),
            ("mysql-install", &[], "MINOS_PARAM_ROOT_PASSWORD", "short"),
            (
                "mysql-install",
                &[],
                "MINOS_PARAM_ROOT_PASSWORD",
                "long enough but ' quoted",
            ),
            (
                "mysql-install",
                &[],
                "MINOS_PARAM_INNODB_BUFFER_POOL_SIZE",
                "1T",
            ),
            ("mysql-install", &[], "MINOS_PARAM_SERVER_ID", "0"),
            (
                "kafka-install",
                &[],
                "MINOS_PARAM_URL",
                "ftp://example.com/kafka.tgz",
            ),
            ("kafka-install", &[], "MINOS_PARAM_SHA512", "abc"),
            (
                "kafka-install",
                &[],
                "MINOS_PARAM_DATA_DIR",
                "/var/lib/../etc",
            ),
            (
                "kafka-install",
                &[],
                "MINOS_PARAM_LISTENERS",
                "PLAINTEXT://:9092",
            ),
            ("kafka-install", &[], "MINOS_PARAM_HEAP", "lots"),
            ("kafka-install", &[], "MINOS_PARAM_CLUSTER_ID", "short"),
            (
                "service-restart",
                &[("name", "nginx")],
                "MINOS_PARAM_NAME",
                "x; reboot",
            ),
            (
                "service-restart",
                &[("name", "nginx")],
                "MINOS_PARAM_TIMEOUT",
                "0",
            ),
            (
                "disk-cleanup",
                &[("dry_run", "false")],
                "MINOS_PARAM_JOURNAL_MAX_SIZE",
                "5 G",
            ),
            (
                "logrotate",
                &[("path", "/var/log/x.log")],
                "MINOS_PARAM_PATH",
                "relative/*.log",
            ),
            ("diagnostics", &[], "MINOS_PARAM_TOP", "-1"),
        ];
        for (name, params, var, bad) in cases {
            let r = get(name);
            let mut env = bind(&r, params).env;
            for (k, v) in env.iter_mut() {
                if k == var {
                    *v = bad.to_string();
                }
            }
            let out = run(&r, &env, path, false);
            let stderr = text(&out.stderr);
            assert!(!out.status.success(), "{name}: {var}={bad:?} was accepted");
            assert!(
                stderr.contains(*var)
                    || stderr.contains(&var.to_ascii_lowercase()[ENV_PREFIX.len()..]),
                "{name}: {var}={bad:?}: the message does not name it: {stderr}"
            );
            assert!(
                !stderr.contains("must run as root"),
                "{name}: {var}={bad:?} passed: {stderr}"
            );
        }

        // Good values (the declared defaults) pass the script's own checks and reach
        // the root check, which fails here for lack of `id`.
        let good: &[(&str, Given)] = &[
            ("redis-install", &[("maxmemory", "1gb")]),
            (
                "redis-install",
                &[
                    ("maxmemory", "0"),
                    ("bind", "127.0.0.1 -::1"),
                    ("requirepass", "s3cr\"et\\"),
                ],
            ),
            ("mysql-install", &[]),
            (
                "mysql-install",
                &[
                    ("flavor", "mysql"),
                    ("root_password", "A-str0ng#pass!"),
                    ("bind_address", "::"),
                ],
            ),
            ("kafka-install", &[]),
            (
                "kafka-install",
                &[
                    ("node_id", "2"),
                    (
                        "controller_quorum_voters",
                        "1@k1:9093,2@k2:9093,3@[fd00::3]:9093",
                    ),
                    ("cluster_id", "MkU3OEVBNTcwNTJENDM2Qk"),
                    ("listeners", "CONTROLLER://:9093,INTERNAL://10.0.0.2:9092"),
                    ("advertised_listeners", "INTERNAL://k2.example.com:9092"),
                    ("sha512", &"ab".repeat(64)),
                ],
            ),
            ("service-restart", &[("name", "nginx.service")]),
            ("disk-cleanup", &[("dry_run", "false")]),
        ];
        for (name, params) in good {
            let r = get(name);
            let env = bind(&r, params).env;
            let out = run(&r, &env, path, false);
            let stderr = text(&out.stderr);
            assert!(
                stderr.contains("must run as root"),
                "{name} {params:?}: refused before the root check: {stderr}"
            );
        }
    }

    // --- parse -----------------------------------------------------------------------

    fn user(interpreter: &str, script: &str) -> Recipe {
        let toml = format!(
            "name = \"t\"\nversion = 1\ndescription = \"d\"\ninterpreter = \"{interpreter}\"\nscript = \"s\"\n"
        );
        Recipe::parse(&toml, script.to_string(), Origin::User).unwrap_or_else(|e| panic!("{e}"))
    }

    const HEAD: &str = "name = \"demo\"\nversion = 2\ndescription = \"A demo\"\ninterpreter = \"bash\"\nscript = \"run.sh\"\n";

    fn parse(params: &str) -> Result<Recipe, RecipeError> {
        Recipe::parse(&format!("{HEAD}{params}"), "echo hi\n".into(), Origin::User)
    }

    fn parse_err(toml: &str) -> String {
        match Recipe::parse(toml, "echo hi\n".into(), Origin::User) {
            Ok(r) => panic!("accepted: {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn demo() -> Recipe {
        parse(
            r#"
[[params]]
name = "port"
type = "int"
default = "6379"
description = "TCP port"

[[params]]
name = "memory"
type = "string"
required = true

[[params]]
name = "aof"
type = "bool"
default = "yes"

[[params]]
name = "policy"
type = "enum"
choices = ["noeviction", "allkeys-lru"]
default = "noeviction"

[[params]]
name = "password"
type = "string"
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_valid_recipe_parses_with_normalised_defaults() {
        let r = demo();
        assert_eq!(r.name, "demo");
        assert_eq!(r.version, 2);
        assert_eq!(r.interpreter, "bash");
        assert_eq!(r.script, "echo hi\n");
        assert_eq!(r.params.len(), 5);
        assert_eq!(r.params[0].kind, ParamType::Int);
        assert_eq!(r.params[0].default.as_deref(), Some("6379"));
        assert!(r.params[1].required);
        assert_eq!(
            r.params[2].default.as_deref(),
            Some("true"),
            "yes is normalised"
        );
        assert_eq!(
            r.params[3].kind,
            ParamType::Enum(vec!["noeviction".into(), "allkeys-lru".into()])
        );
        assert_eq!(r.params[4].default, None);
        assert_eq!(r.params[4].env_name(), "MINOS_PARAM_PASSWORD");
    }

    #[test]
    fn an_unknown_field_is_an_error_with_its_line() {
        let e = parse_err(&format!("{HEAD}timeout = 5\n"));
        assert!(e.starts_with("recipe demo: recipe.toml line 6:"), "{e}");
        assert!(e.contains("timeout"), "{e}");

        let e = parse("[[params]]\nname = \"port\"\ntype = \"int\"\ndefualt = \"1\"\n")
            .expect_err("typo in a param")
            .to_string();
        assert!(e.contains("line 9") && e.contains("defualt"), "{e}");
    }

    #[test]
    fn missing_fields_and_wrong_types_are_malformed() {
        let e = parse_err("name = \"x\"\nversion = 1\n");
        assert!(e.starts_with("recipe x: recipe.toml"), "{e}");
        assert!(e.contains("missing field"), "{e}");
        let e = parse_err(&HEAD.replace("version = 2", "version = \"2\""));
        assert!(e.contains("line 2"), "{e}");
        let e = parse("[[params]]\nname = \"port\"\ntype = \"int\"\ndefault = 6379\n")
            .expect_err("default not a string")
            .to_string();
        assert!(e.contains("line 9"), "{e}");
        let e = parse_err("this is not toml");
        assert!(
            e.starts_with("recipe (unnamed): recipe.toml line 1:"),
            "{e}"
        );
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in [
            "Redis",
            "-redis",
            "redis_install",
            "",
            "a b",
            &"a".repeat(65),
        ] {
            let e = parse_err(&HEAD.replace("\"demo\"", &format!("{bad:?}")));
            assert!(e.contains("must be [a-z0-9][a-z0-9-]*"), "{bad:?}: {e}");
        }
        assert!(
            Recipe::parse(
                &HEAD.replace("demo", &"a".repeat(64)),
                "x".into(),
                Origin::User
            )
            .is_ok()
        );
        for bad in ["Port", "1port", "po-rt", "", "_x"] {
            let e = parse(&format!("[[params]]\nname = {bad:?}\ntype = \"int\"\n"))
                .expect_err(bad)
                .to_string();
            assert!(
                e.contains("the name must be [a-z][a-z0-9_]*"),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn a_duplicate_param_is_refused() {
        let e = parse(
            "[[params]]\nname = \"port\"\ntype = \"int\"\n[[params]]\nname = \"port\"\ntype = \"string\"\n",
        )
        .expect_err("duplicate")
        .to_string();
        assert_eq!(e, "recipe demo: parameter \"port\": declared twice");
    }

    #[test]
    fn a_default_must_fit_its_type() {
        for (kind, default, msg) in [
            (
                "type = \"int\"",
                "abc",
                "default: \"abc\" is not an integer",
            ),
            (
                "type = \"int\"",
                "1.5",
                "default: \"1.5\" is not an integer",
            ),
            (
                "type = \"bool\"",
                "maybe",
                "default: \"maybe\" is not a boolean (true or false)",
            ),
            (
                "type = \"enum\"\nchoices = [\"a\", \"b\"]",
                "c",
                "default: \"c\" is not one of \"a\", \"b\"",
            ),
        ] {
            let e = parse(&format!(
                "[[params]]\nname = \"p\"\n{kind}\ndefault = {default:?}\n"
            ))
            .expect_err(default)
            .to_string();
            assert_eq!(e, format!("recipe demo: parameter \"p\": {msg}"));
        }
    }

    #[test]
    fn param_declaration_rules() {
        for (body, msg) in [
            ("type = \"enum\"", "an enum needs choices"),
            (
                "type = \"enum\"\nchoices = []",
                "an enum needs at least one choice",
            ),
            (
                "type = \"enum\"\nchoices = [\"a\", \"a\"]",
                "choice \"a\" is listed twice",
            ),
            ("type = \"enum\"\nchoices = [\"\"]", "a choice is empty"),
            (
                "type = \"int\"\nchoices = [\"1\"]",
                "choices are only for an enum, not a int",
            ),
            (
                "type = \"float\"",
                "type \"float\" is not one of string, int, bool, enum",
            ),
            (
                "type = \"int\"\nrequired = true\ndefault = \"1\"",
                "required with a default: the default would never be used",
            ),
        ] {
            let e = parse(&format!("[[params]]\nname = \"p\"\n{body}\n"))
                .expect_err(body)
                .to_string();
            assert_eq!(e, format!("recipe demo: parameter \"p\": {msg}"), "{body}");
        }
    }

    #[test]
    fn recipe_rules_report_every_problem() {
        let toml = "name = \"Bad\"\nversion = 0\ndescription = \" \"\ninterpreter = \"perl\"\nscript = \"../x\"\n\
                    [[params]]\nname = \"a\"\ntype = \"int\"\ndefault = \"x\"\n\
                    [[params]]\nname = \"a\"\ntype = \"bool\"\n";
        let err = Recipe::parse(toml, " \n".into(), Origin::User).expect_err("bad");
        let RecipeError::Invalid { recipe, problems } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(recipe, "\"Bad\"");
        assert_eq!(
            problems,
            &[
                "script \"../x\" must be a file name next to recipe.toml: [A-Za-z0-9_][A-Za-z0-9._-]*",
                "name \"Bad\" must be [a-z0-9][a-z0-9-]*, at most 64 characters",
                "version 0 must be between 1 and 4294967295",
                "description is empty",
                "interpreter \"perl\" is not one of bash, sh, python3",
                "the script is empty",
                "parameter \"a\": default: \"x\" is not an integer",
                "parameter \"a\": declared twice",
            ]
        );
        assert!(
            err.to_string().starts_with("recipe \"Bad\": script"),
            "{err}"
        );
    }

    #[test]
    fn script_limits() {
        let big = "#".repeat(MAX_SCRIPT_BYTES + 1);
        let e = Recipe::parse(HEAD, big, Origin::User)
            .expect_err("too big")
            .to_string();
        assert!(e.contains("more than 262144"), "{e}");
        assert!(Recipe::parse(HEAD, "#".repeat(MAX_SCRIPT_BYTES), Origin::User).is_ok());
        let e = Recipe::parse(HEAD, "echo \0".into(), Origin::User)
            .expect_err("NUL")
            .to_string();
        assert!(e.contains("NUL"), "{e}");
        let e = parse_err(&HEAD.replace("run.sh", "recipe.toml"));
        assert!(e.contains("must be a file name"), "{e}");
    }

    // --- bind ------------------------------------------------------------------------

    #[test]
    fn bind_fills_defaults_and_names_env_vars() {
        let r = demo();
        let b = bind(&r, &[("memory", "1gb"), ("port", "007")]);
        assert_eq!(
            b.params,
            given(&[
                ("aof", "true"),
                ("memory", "1gb"),
                ("password", ""),
                ("policy", "noeviction"),
                ("port", "7"),
            ])
        );
        let env: Vec<(&str, &str)> = b
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            env,
            [
                ("MINOS_PARAM_AOF", "true"),
                ("MINOS_PARAM_MEMORY", "1gb"),
                ("MINOS_PARAM_PASSWORD", ""),
                ("MINOS_PARAM_POLICY", "noeviction"),
                ("MINOS_PARAM_PORT", "7"),
            ]
        );
    }

    #[test]
    fn bind_normalises_values() {
        let r = demo();
        for (v, want) in [
            ("TRUE", "true"),
            ("0", "false"),
            ("off", "false"),
            ("Yes", "true"),
        ] {
            assert_eq!(bind(&r, &[("memory", "m"), ("aof", v)]).params["aof"], want);
        }
        for (v, want) in [("-5", "-5"), ("+5", "5"), ("0010", "10")] {
            assert_eq!(
                bind(&r, &[("memory", "m"), ("port", v)]).params["port"],
                want
            );
        }
        // Strings pass as given: spaces, quotes, shell syntax (they never reach the text).
        let tricky = "$(reboot) `x` ' \" ; \n";
        assert_eq!(bind(&r, &[("memory", tricky)]).params["memory"], tricky);
    }

    #[test]
    fn bind_env_is_sorted_by_variable_name() {
        let r = parse(
            "[[params]]\nname = \"ab\"\ntype = \"string\"\n[[params]]\nname = \"a_b\"\ntype = \"string\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let b = bind(&r, &[]);
        let names: Vec<&str> = b.env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["MINOS_PARAM_AB", "MINOS_PARAM_A_B"]);
    }

    #[test]
    fn bind_reports_every_problem() {
        let r = demo();
        let err = r
            .bind(&given(&[
                ("prot", "1"),
                ("port", "abc"),
                ("aof", "maybe"),
                ("policy", "lru"),
            ]))
            .expect_err("bad");
        let RecipeError::Params { recipe, problems } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(recipe, "demo");
        let names: Vec<&str> = problems.iter().map(ParamProblem::name).collect();
        assert_eq!(names, ["prot", "port", "memory", "aof", "policy"]);
        assert_eq!(
            err.to_string(),
            "recipe demo: unknown parameter \"prot\"; \
             parameter \"port\": \"abc\" is not an integer; \
             parameter \"memory\" is required; \
             parameter \"aof\": \"maybe\" is not a boolean (true or false); \
             parameter \"policy\": \"lru\" is not one of \"noeviction\", \"allkeys-lru\""
        );
        assert!(matches!(problems[0], ParamProblem::Unknown { .. }));
        assert!(matches!(problems[2], ParamProblem::Missing { .. }));
        assert!(matches!(problems[1], ParamProblem::BadValue { .. }));
    }

    #[test]
    fn bind_refuses_an_empty_required_string_and_bad_strings() {
        let r = demo();
        let e = r
            .bind(&given(&[("memory", "")]))
            .expect_err("empty")
            .to_string();
        assert_eq!(e, "recipe demo: parameter \"memory\" is required");
        let e = r
            .bind(&given(&[("memory", "a\0b")]))
            .expect_err("NUL")
            .to_string();
        assert_eq!(
            e,
            "recipe demo: parameter \"memory\": the value contains a NUL byte"
        );
        let long = "x".repeat(MAX_VALUE_BYTES + 1);
        let e = r
            .bind(&given(&[("memory", &long)]))
            .expect_err("long")
            .to_string();
        assert!(e.contains("more than 65536") && !e.contains("xxxx"), "{e}");
    }

    #[test]
    fn error_messages_cut_long_values() {
        let r = demo();
        let long = "9".repeat(100) + "x";
        let e = r
            .bind(&given(&[("memory", "m"), ("port", &long)]))
            .expect_err("bad")
            .to_string();
        assert!(
            e.contains(&format!("\"{}\"…", "9".repeat(SHOWN_VALUE_CHARS))),
            "{e}"
        );
    }

    // --- JSON ------------------------------------------------------------------------

    #[test]
    fn to_json_describes_the_recipe() {
        let r = demo();
        let v = r.to_json(false);
        assert_eq!(v["name"], "demo");
        assert_eq!(v["version"], 2);
        assert_eq!(v["origin"], "user");
        assert_eq!(v["interpreter"], "bash");
        assert_eq!(v["script_sha256"], r.script_sha256());
        assert!(v.get("script").is_none());
        assert_eq!(r.to_json(true)["script"], "echo hi\n");
        let p = &v["params"];
        assert_eq!(
            p[0],
            json!({"name": "port", "type": "int", "default": "6379", "required": false, "description": "TCP port"})
        );
        assert_eq!(
            p[1],
            json!({"name": "memory", "type": "string", "required": true, "description": ""})
        );
        assert_eq!(p[3]["choices"], json!(["noeviction", "allkeys-lru"]));
        assert!(p[0].get("choices").is_none());
    }

    #[test]
    fn script_sha256_is_the_hex_digest() {
        let r = user("sh", "abc");
        assert_eq!(
            r.script_sha256(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn json_round_trips_every_shipped_recipe() {
        for r in all_shipped() {
            let back = from_json(&r.to_json(true), r.version + 1)
                .unwrap_or_else(|e| panic!("{}: {e}", r.name));
            let want = Recipe {
                origin: Origin::User,
                version: r.version + 1,
                ..r.clone()
            };
            assert_eq!(back, want);
        }
    }

    #[test]
    fn from_json_checks_like_parse() {
        let ok = json!({
            "name": "mine",
            "description": "Mine",
            "interpreter": "python3",
            "params": [{"name": "n", "type": "int", "default": "3"}],
            "script": "import os\nprint(os.environ['MINOS_PARAM_N'])\n",
        });
        let r = from_json(&ok, 4).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.version, r.origin), (4, Origin::User));
        assert_eq!(r.params[0].default.as_deref(), Some("3"));

        let mut v = ok.clone();
        v["extra"] = json!(1);
        let e = from_json(&v, 1).expect_err("unknown field").to_string();
        assert!(e.starts_with("recipe mine: unknown field `extra`"), "{e}");

        let mut v = ok.clone();
        v["params"][0]["typ"] = json!("int");
        let e = from_json(&v, 1).expect_err("param typo").to_string();
        assert!(
            e.starts_with("recipe mine: parameter \"n\": unknown field `typ`"),
            "{e}"
        );

        let mut v = ok.clone();
        v["params"] = json!([{"type": "int"}]);
        let e = from_json(&v, 1).expect_err("no name").to_string();
        assert!(
            e.starts_with("recipe mine: parameter #1: missing field `name`"),
            "{e}"
        );

        let mut v = ok.clone();
        v.as_object_mut().expect("object").remove("script");
        let e = from_json(&v, 1).expect_err("no script").to_string();
        assert!(e.contains("missing field `script`"), "{e}");

        let mut v = ok.clone();
        v["params"][0]["default"] = json!(3);
        assert!(from_json(&v, 1).is_err(), "defaults are strings");

        let e = from_json(&ok, 0).expect_err("version 0").to_string();
        assert!(e.contains("version 0 must be between 1"), "{e}");

        let e = from_json(&json!("recipe"), 1)
            .expect_err("not an object")
            .to_string();
        assert!(e.starts_with("recipe (unnamed): invalid type"), "{e}");
    }

    // --- layout of recipes/ ----------------------------------------------------------

    #[test]
    fn shipped_layout_errors() {
        let toml = "name = \"x\"\nversion = 1\ndescription = \"d\"\ninterpreter = \"sh\"\nscript = \"run.sh\"\n";
        let e = shipped_one("x", &[("run.sh", "echo")]).expect_err("no toml");
        assert_eq!(e.to_string(), "recipes/x: no recipe.toml");
        let e = shipped_one("x", &[("recipe.toml", toml)]).expect_err("no script");
        assert_eq!(
            e.to_string(),
            "recipes/x: recipe.toml names the script \"run.sh\", which is not in the directory"
        );
        let e = shipped_one(
            "x",
            &[
                ("notes.txt", "n"),
                ("recipe.toml", toml),
                ("run.sh", "echo"),
            ],
        )
        .expect_err("stray file");
        assert_eq!(
            e.to_string(),
            "recipes/x: \"notes.txt\" is neither recipe.toml nor the script it names"
        );
        let e = shipped_one("y", &[("recipe.toml", toml), ("run.sh", "echo")]).expect_err("name");
        assert_eq!(
            e.to_string(),
            "recipes/y: recipe.toml names the recipe \"x\": a recipe's directory has its name"
        );
        let r = shipped_one("x", &[("recipe.toml", toml), ("run.sh", "echo")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.origin, r.script.as_str()), (Origin::Shipped, "echo"));
    }
}
