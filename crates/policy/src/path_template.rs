//! Istio path templates (`{*}`, `{**}`) compiled to matchers. (placeholder, being written)

/// A compiled `paths` template such as `/store/{**}/cart`.
#[derive(Clone, Debug)]
pub struct PathTemplate {
    source: String,
}

impl PathTemplate {
    /// True when `value` uses template operators and must be compiled with [`PathTemplate::parse`].
    pub fn is_template(value: &str) -> bool {
        value.contains("{*}") || value.contains("{**}")
    }

    /// Compiles a template, or explains why Istio would reject it.
    pub fn parse(value: &str) -> Result<PathTemplate, String> {
        Ok(PathTemplate { source: value.to_string() })
    }

    /// Matches a path that has already been normalized and stripped of query and fragment.
    pub fn matches(&self, path: &str) -> bool {
        self.source == path
    }
}
