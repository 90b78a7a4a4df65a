//! Exact storage form of amounts: signed integers of 1/10000 units.
//!
//! FSPIOP amounts have at most 4 decimal places and 18 significant digits,
//! so `amount * 10^4` fits in an `i64` (|x| < 9.2e18). Both backends store
//! these integers, which also makes SQL sums exact.

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

/// Decimal places kept.
pub const SCALE: u32 = 4;
/// 10^SCALE.
const UNITS_PER_ONE: i64 = 10_000;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AmountError {
    #[error("amount {0} has more than 4 decimal places")]
    Scale(Decimal),
    #[error("amount {0} has more than 18 significant digits")]
    Precision(Decimal),
}

/// The largest magnitude an amount or balance may have: 18 digits, 4 after the point.
pub fn max_abs() -> Decimal {
    Decimal::new(999_999_999_999_999_999, SCALE)
}

/// Decimal -> stored integer. Refuses anything that would not round-trip exactly.
pub fn to_units(amount: Decimal) -> Result<i64, AmountError> {
    let normal = amount.normalize();
    if normal.scale() > SCALE {
        return Err(AmountError::Scale(amount));
    }
    if normal.abs() > max_abs() {
        return Err(AmountError::Precision(amount));
    }
    let scaled = normal * Decimal::from(UNITS_PER_ONE);
    scaled.to_i64().ok_or(AmountError::Precision(amount))
}

/// Stored integer -> Decimal, normalised (no trailing zeros).
pub fn from_units(units: i64) -> Decimal {
    Decimal::new(units, SCALE).normalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).expect("decimal")
    }

    #[test]
    fn round_trips_exactly() {
        for s in ["0", "1", "0.0001", "123.45", "-77.5", "99999999999999.9999"] {
            let units = to_units(d(s)).expect("fits");
            assert_eq!(from_units(units), d(s).normalize(), "{s}");
        }
        assert_eq!(to_units(d("1.5")), Ok(15_000));
    }

    #[test]
    fn refuses_what_does_not_fit() {
        assert!(matches!(to_units(d("0.00001")), Err(AmountError::Scale(_))));
        assert!(matches!(
            to_units(d("100000000000000")),
            Err(AmountError::Precision(_))
        ));
        assert_eq!(
            to_units(d("1.50000")),
            Ok(15_000),
            "trailing zeros are not extra scale"
        );
    }
}
