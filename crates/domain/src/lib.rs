//! Pure domain model for 房证同交 (certificate on handover day) and 地证同交
//! (certificate on land delivery).
//!
//! Everything here is deterministic and free of I/O so that the gRPC services,
//! the store and the workflow engine agree on one definition of "valid".
//! Parse errors describe the reason only (English plus the Chinese term); the
//! caller attaches the field name, usually through [`Violations`].

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

/// Implements the string plumbing shared by validated string newtypes.
///
/// `TryFrom<String>` and `From<T> for String` go through `FromStr`, so the
/// optional serde representation can never bypass validation.
macro_rules! string_newtype {
    ($ty:ident, $field:tt) => {
        impl $ty {
            /// The validated, normalised text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.$field
            }

            /// Gives up the wrapper and returns the normalised text.
            #[must_use]
            pub fn into_string(self) -> String {
                self.$field
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.$field
            }
        }

        impl From<$ty> for String {
            fn from(value: $ty) -> String {
                value.$field
            }
        }

        impl TryFrom<String> for $ty {
            type Error = <$ty as ::std::str::FromStr>::Err;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                value.parse()
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = <$ty as ::std::str::FromStr>::Err;

            fn try_from(value: &str) -> Result<Self, Self::Error> {
                value.parse()
            }
        }
    };
}

mod case;
mod certificate;
mod credit_code;
mod date;
mod ids;
mod measure;
mod ownership;
mod readiness;
mod region;
mod resident_id;
mod unit_code;
mod unknown;
mod violations;

pub use case::{CaseEvent, CaseState, TransitionError, transition};
pub use certificate::{CertificateKind, CertificateNumber, CertificateNumberError};
pub use credit_code::{CreditCode, CreditCodeError, credit_code_check_char};
pub use date::{DateError, format_date, format_date_zh, parse_date, term_of_use_zh};
pub use ids::{ProjectId, ProjectIdError, RequestId, RequestIdError, Sha256Hex, Sha256HexError};
pub use measure::{Area, AreaError, Money, MoneyError, check_area_identity};
pub use ownership::{CoOwnership, CoOwnershipError, check_co_ownership};
pub use readiness::{
    BuyerFacts, CaseFacts, Missing, MissingKind, ProjectFacts, case_missing,
    first_registration_missing,
};
pub use region::province_abbr;
pub use resident_id::{ResidentId, ResidentIdError, resident_id_check_char};
pub use unit_code::{FixtureFeature, ParcelCode, UnitCode, UnitCodeError};
pub use unknown::UnknownValueError;
pub use violations::{FieldViolation, Violations};
