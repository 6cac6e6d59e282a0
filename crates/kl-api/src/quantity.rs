//! Kubernetes resource quantities: `100m`, `0.5`, `2` (cpu); `128Mi`, `1Gi`, `1e6`, `1k` (memory).
//!
//! The scheduler compares requests with allocatable in integer units: [`Quantity::milli_value`]
//! (milli-cores for cpu) and [`Quantity::value`] (bytes for memory), both rounded up as
//! Kubernetes does.
use std::fmt;
use std::str::FromStr;

/// A parsed quantity, held exactly as thousandths of a unit (rounded up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity {
    millis: i128,
}

/// A string that is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)]
pub struct QuantityError;

impl Quantity {
    /// Parses a Kubernetes quantity.
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        let s = s.trim();
        let (neg, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, suffix) = rest.split_at(num_end);
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(QuantityError);
        }
        // mantissa = digits / 10^frac_len
        let digits: String = format!("{int_part}{frac_part}");
        if digits.len() > 30 {
            return Err(QuantityError);
        }
        let mantissa: i128 = digits.parse().map_err(|_| QuantityError)?;
        let mut den: i128 = 10i128.pow(frac_part.len() as u32);
        // multiplier = num / den
        let mut num_mul: i128 = 1000; // to milli-units
        match suffix {
            "" => {}
            "n" => den = den.checked_mul(1_000_000_000).ok_or(QuantityError)?,
            "u" => den = den.checked_mul(1_000_000).ok_or(QuantityError)?,
            "m" => den = den.checked_mul(1_000).ok_or(QuantityError)?,
            "k" => num_mul *= 1_000,
            "M" => num_mul *= 1_000_000,
            "G" => num_mul *= 1_000_000_000,
            "T" => num_mul *= 1_000_000_000_000,
            "P" => num_mul *= 1_000_000_000_000_000,
            "E" => num_mul *= 1_000_000_000_000_000_000,
            "Ki" => num_mul <<= 10,
            "Mi" => num_mul <<= 20,
            "Gi" => num_mul <<= 30,
            "Ti" => num_mul <<= 40,
            "Pi" => num_mul <<= 50,
            "Ei" => num_mul <<= 60,
            exp if exp.starts_with(['e', 'E']) => {
                let e: i32 = exp[1..].parse().map_err(|_| QuantityError)?;
                if !(-18..=18).contains(&e) {
                    return Err(QuantityError);
                }
                let p = 10i128.pow(e.unsigned_abs());
                if e >= 0 {
                    num_mul = num_mul.checked_mul(p).ok_or(QuantityError)?;
                } else {
                    den = den.checked_mul(p).ok_or(QuantityError)?;
                }
            }
            _ => return Err(QuantityError),
        }
        let n = mantissa.checked_mul(num_mul).ok_or(QuantityError)?;
        let millis = (n + den - 1) / den; // round up, as Kubernetes does
        Ok(Quantity {
            millis: if neg { -millis } else { millis },
        })
    }

    /// Thousandths of a unit, rounded up (milli-cores for cpu).
    pub fn milli_value(self) -> i64 {
        self.millis.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// Whole units, rounded up (bytes for memory, cores for cpu).
    pub fn value(self) -> i64 {
        let v = if self.millis >= 0 {
            (self.millis + 999) / 1000
        } else {
            self.millis / 1000
        };
        v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

impl fmt::Display for Quantity {
    /// Canonical-enough form: whole units when exact, else milli-units (`100m`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis % 1000 == 0 {
            write!(f, "{}", self.millis / 1000)
        } else {
            write!(f, "{}m", self.millis)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn cpu() {
        assert_eq!(q("100m").milli_value(), 100);
        assert_eq!(q("0.5").milli_value(), 500);
        assert_eq!(q(".5").milli_value(), 500);
        assert_eq!(q("2").milli_value(), 2000);
        assert_eq!(q("1.5").value(), 2);
        assert_eq!(q("1u").milli_value(), 1, "rounds up");
    }

    #[test]
    fn memory() {
        assert_eq!(q("128Mi").value(), 128 << 20);
        assert_eq!(q("1Gi").value(), 1 << 30);
        assert_eq!(q("1e6").value(), 1_000_000);
        assert_eq!(q("1E3").value(), 1000);
        assert_eq!(q("1k").value(), 1000);
        assert_eq!(q("1.5Gi").value(), 3 << 29);
        assert_eq!(q("500M").value(), 500_000_000);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "abc", "1x", "1..2", "Mi", "1 Gi", "1e", "1e99", "."] {
            assert_eq!(Quantity::parse(bad), Err(QuantityError), "{bad:?}");
        }
    }
}
