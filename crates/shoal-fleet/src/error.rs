//! The one error type of this crate.

use shoal_types::ValidationError;

/// Why a unit file could not be read or mapped. Every message names what it is about: the line
/// of the unit file, the unit name, or the field of the mapped service.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// The unit file's syntax (`line 7: expected "Key=Value" or "[Section]", found "foo"`).
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    /// The unit's name: not a `.service` unit, a template, or not a valid systemd unit name.
    #[error("unit name {name:?}: {message}")]
    Name { name: String, message: String },
    /// Settings Shoal refuses, all of them, each naming its line
    /// (`line 5: Service.Type=forking: …`).
    #[error("{unit}: {}", .problems.join("; "))]
    Refused { unit: String, problems: Vec<String> },
    /// The mapped service breaks one of Shoal's rules (`ServiceSpec::validate`).
    #[error("{unit}: the mapped service is invalid: {source}")]
    Invalid { unit: String, source: ValidationError },
}
