//! Path normalization as Envoy's HTTP connection manager does it for Istio. (placeholder)

/// `meshConfig.pathNormalization.normalization`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PathNormalization {
    None,
    #[default]
    Base,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

/// Why a request path is refused (400).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NormalizeError {
    NulByte,
}

/// Returns the normalized path with its query (fragment removed).
pub fn normalize(raw: &str, _mode: PathNormalization) -> Result<String, NormalizeError> {
    Ok(raw.split('#').next().unwrap_or("").to_string())
}
