//! Templates of alert labels and annotations, in Prometheus' syntax (Go's
//! `text/template` with Prometheus' functions).
//!
//! Placeholder: the text is returned unchanged until the evaluator lands.

use std::collections::BTreeMap;

/// What a template sees: `$labels`, `$value`, `$externalLabels`, `$externalURL`.
#[derive(Debug, Clone, Default)]
pub struct Data {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub external_labels: BTreeMap<String, String>,
    pub external_url: String,
}

/// Runs an instant PromQL query at the evaluation time, for the `query` function.
pub trait QueryFn {
    fn query(&self, q: &str) -> Result<Vec<(BTreeMap<String, String>, f64)>, String>;
}

/// Why a template could not be parsed or executed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("template {name}: {message}")]
pub struct TemplateError {
    pub name: String,
    pub message: String,
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    text: String,
}

impl Template {
    /// Parses `text`; `name` names it in errors (e.g. `annotation summary`).
    pub fn parse(name: &str, text: &str) -> Result<Template, TemplateError> {
        let _ = name;
        Ok(Template {
            text: text.to_string(),
        })
    }

    /// Executes the template on `data`; `query` serves the `query` function.
    pub fn execute(
        &self,
        data: &Data,
        query: Option<&dyn QueryFn>,
    ) -> Result<String, TemplateError> {
        let _ = (data, query);
        Ok(self.text.clone())
    }
}
