//! Identifier newtypes.
//!
//! Every id that crosses a crate boundary or the wire is one of these types. Text ids are
//! validated when they are made and when they are decoded, so a value of one of these types is
//! always well formed; decoding a malformed one fails the whole frame as malformed.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Why a text could not become an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The text is empty or longer than the id allows.
    #[error("{kind} `{value}` must be 1 to {max} characters long")]
    Length {
        /// Which kind of id.
        kind: &'static str,
        /// The offending text (truncated to 80 characters).
        value: String,
        /// The longest allowed.
        max: usize,
    },
    /// The text holds a character the id does not allow.
    #[error("{kind} `{value}` may only contain {allowed}")]
    Characters {
        /// Which kind of id.
        kind: &'static str,
        /// The offending text (truncated to 80 characters).
        value: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// A digit code with the wrong number of digits.
    #[error("{kind} `{value}` must be {expected}")]
    Digits {
        /// Which kind of code.
        kind: &'static str,
        /// The offending text (truncated to 80 characters).
        value: String,
        /// What is expected.
        expected: &'static str,
    },
    /// A digest that is not 64 hex digits.
    #[error("digest `{value}` must be 64 hex digits")]
    Digest {
        /// The offending text (truncated to 80 characters).
        value: String,
    },
}

macro_rules! name_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `value`: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, starting with a
            /// letter or digit.
            ///
            /// # Errors
            /// [`IdError`] naming the rule that `value` breaks.
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check_name($kind, &value)?;
                Ok(Self(value))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
    };
}

name_id!(
    /// An edge box, as registered on the hub and bound into its certificate.
    BoxId,
    "box id"
);
name_id!(
    /// A camera on a box (unique within the box).
    CameraId,
    "camera id"
);
name_id!(
    /// A sensor on a box (unique within the box).
    SensorId,
    "sensor id"
);
name_id!(
    /// The id of an event source on a box: a camera, a sensor or the box itself.
    SourceId,
    "source id"
);

impl From<CameraId> for SourceId {
    fn from(id: CameraId) -> SourceId {
        SourceId(id.0)
    }
}

impl From<SensorId> for SourceId {
    fn from(id: SensorId) -> SourceId {
        SourceId(id.0)
    }
}

/// The per-box sequence number of an event. The box assigns them gap-free in commit order,
/// starting at 1; the hub acknowledges "everything up to `Seq`".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// The number after this one.
    #[must_use]
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A globally unique event id: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(Uuid);

impl EventId {
    /// A UUIDv7 from a Unix time in milliseconds and 10 random bytes. The caller supplies both:
    /// this crate reads no clock and no random source.
    pub fn v7(unix_millis: u64, random: [u8; 10]) -> Self {
        EventId(uuid::Builder::from_unix_timestamp_millis(unix_millis, &random).into_uuid())
    }

    /// Wraps an existing UUID (e.g. read back from a database).
    pub fn from_uuid(uuid: Uuid) -> Self {
        EventId(uuid)
    }

    /// The UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The id of a command from the hub to a box, echoed in its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommandId(Uuid);

impl CommandId {
    /// Wraps a UUID.
    pub fn from_uuid(uuid: Uuid) -> Self {
        CommandId(uuid)
    }

    /// The UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An event category code in the GB/T 30428.2 style: 2 digits for a major class, 4 digits
/// (major + minor) for a minor class. Events carry minor-class codes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CategoryCode(String);

impl CategoryCode {
    /// Validates a 2- or 4-digit code.
    ///
    /// # Errors
    /// [`IdError::Digits`] when `value` is not 2 or 4 ASCII digits.
    pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        if !(value.len() == 2 || value.len() == 4) || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdError::Digits {
                kind: "category code",
                value: clip(&value),
                expected: "2 digits (major class) or 4 digits (minor class)",
            });
        }
        Ok(CategoryCode(value))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for a minor-class (4-digit) code.
    pub fn is_minor(&self) -> bool {
        self.0.len() == 4
    }

    /// The major class this code belongs to (itself for a major code).
    pub fn major(&self) -> CategoryCode {
        CategoryCode(self.0[..2].to_owned())
    }
}

impl TryFrom<String> for CategoryCode {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        Self::parse(value)
    }
}

impl From<CategoryCode> for String {
    fn from(code: CategoryCode) -> String {
        code.0
    }
}

impl fmt::Display for CategoryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A grid code (GB/T 30428.1 style): 6 digits for a district, 9 for a street, 12 for a
/// community, 14 for a unit grid cell. Each level's code starts with its parent's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GridCode(String);

/// The level a [`GridCode`] names, from its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GridLevel {
    /// 6 digits.
    District,
    /// 9 digits.
    Street,
    /// 12 digits.
    Community,
    /// 14 digits: a unit grid cell.
    Cell,
}

impl GridCode {
    /// Validates a 6-, 9-, 12- or 14-digit code.
    ///
    /// # Errors
    /// [`IdError::Digits`] for any other text.
    pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        if ![6, 9, 12, 14].contains(&value.len()) || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdError::Digits {
                kind: "grid code",
                value: clip(&value),
                expected: "6 (district), 9 (street), 12 (community) or 14 (grid cell) digits",
            });
        }
        Ok(GridCode(value))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The level, from the code's length.
    pub fn level(&self) -> GridLevel {
        match self.0.len() {
            6 => GridLevel::District,
            9 => GridLevel::Street,
            12 => GridLevel::Community,
            // invariant: `parse` admits only lengths 6, 9, 12 and 14.
            _ => GridLevel::Cell,
        }
    }

    /// The parent code (street of a cell, ...), or `None` for a district.
    pub fn parent(&self) -> Option<GridCode> {
        let len = match self.level() {
            GridLevel::District => return None,
            GridLevel::Street => 6,
            GridLevel::Community => 9,
            GridLevel::Cell => 12,
        };
        Some(GridCode(self.0[..len].to_owned()))
    }

    /// True when `self` is `other` or lies inside it.
    pub fn is_within(&self, other: &GridCode) -> bool {
        self.0.starts_with(&other.0)
    }
}

impl TryFrom<String> for GridCode {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        Self::parse(value)
    }
}

impl From<GridCode> for String {
    fn from(code: GridCode) -> String {
        code.0
    }
}

impl fmt::Display for GridCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SHA-256 digest, naming an evidence file. Binary on the wire, 64 lowercase hex digits in
/// human-readable formats (JSON) and in `Display`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Parses 64 hex digits.
    ///
    /// # Errors
    /// [`IdError::Digest`] for anything else.
    pub fn from_hex(text: &str) -> Result<Self, IdError> {
        let bad = || IdError::Digest { value: clip(text) };
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or_else(bad)?;
            let lo = hex_value(pair[1]).ok_or_else(bad)?;
            out[i] = hi << 4 | lo;
        }
        Ok(Digest(out))
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 0xf)] as char);
        }
        s
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_hex())
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DigestVisitor;
        impl serde::de::Visitor<'_> for DigestVisitor {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("32 bytes or 64 hex digits")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Digest, E> {
                <[u8; 32]>::try_from(v)
                    .map(Digest)
                    .map_err(|_| E::invalid_length(v.len(), &self))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Digest, E> {
                Digest::from_hex(v).map_err(E::custom)
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(DigestVisitor)
        } else {
            deserializer.deserialize_bytes(DigestVisitor)
        }
    }
}

fn check_name(kind: &'static str, value: &str) -> Result<(), IdError> {
    const MAX: usize = 64;
    if value.is_empty() || value.len() > MAX {
        return Err(IdError::Length {
            kind,
            value: clip(value),
            max: MAX,
        });
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let first_ok = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !value.chars().all(ok_char) {
        return Err(IdError::Characters {
            kind,
            value: clip(value),
            allowed: "ASCII letters, digits, `.`, `_` and `-`, starting with a letter or digit",
        });
    }
    Ok(())
}

fn clip(value: &str) -> String {
    value.chars().take(80).collect()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_the_documented_alphabet_only() {
        assert!(BoxId::parse("box-01.north_gate").is_ok());
        assert!(matches!(BoxId::parse(""), Err(IdError::Length { .. })));
        assert!(matches!(
            BoxId::parse("a".repeat(65)),
            Err(IdError::Length { .. })
        ));
        assert!(matches!(
            BoxId::parse("-box"),
            Err(IdError::Characters { .. })
        ));
        assert!(matches!(
            BoxId::parse("box 1"),
            Err(IdError::Characters { .. })
        ));
        assert!(matches!(
            CameraId::parse("门口"),
            Err(IdError::Characters { .. })
        ));
    }

    #[test]
    fn grid_codes_know_their_level_and_parent() {
        let cell = GridCode::parse("11010100100101").unwrap();
        assert_eq!(cell.level(), GridLevel::Cell);
        let community = cell.parent().unwrap();
        assert_eq!(community.as_str(), "110101001001");
        assert_eq!(community.parent().unwrap().as_str(), "110101001");
        assert_eq!(
            community.parent().unwrap().parent().unwrap().as_str(),
            "110101"
        );
        assert!(
            community
                .parent()
                .unwrap()
                .parent()
                .unwrap()
                .parent()
                .is_none()
        );
        assert!(cell.is_within(&community));
        assert!(!community.is_within(&cell));
        assert!(GridCode::parse("1101010010010").is_err());
        assert!(GridCode::parse("11010a").is_err());
    }

    #[test]
    fn category_codes_are_two_or_four_digits() {
        assert_eq!(CategoryCode::parse("0102").unwrap().major().as_str(), "01");
        assert!(CategoryCode::parse("01").is_ok());
        assert!(CategoryCode::parse("012").is_err());
        assert!(CategoryCode::parse("01a2").is_err());
    }

    #[test]
    fn digest_hex_round_trips_and_rejects_junk() {
        let d = Digest([0xab; 32]);
        assert_eq!(Digest::from_hex(&d.to_hex()).unwrap(), d);
        assert_eq!(Digest::from_hex(&d.to_hex().to_uppercase()).unwrap(), d);
        assert!(Digest::from_hex("ab").is_err());
        assert!(Digest::from_hex(&"g".repeat(64)).is_err());
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            format!("\"{}\"", d.to_hex())
        );
    }

    #[test]
    fn event_ids_are_version_7_and_sort_by_time() {
        let a = EventId::v7(1_700_000_000_000, [9; 10]);
        let b = EventId::v7(1_700_000_000_001, [0; 10]);
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(a < b);
    }
}
