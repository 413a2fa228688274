//! Usernames: what is allowed, and the folded key that makes them unique regardless of case.

use unicode_normalization::UnicodeNormalization;

use crate::error::Error;

/// The longest username, in characters (Django's limit).
pub const MAX_LEN: usize = 150;

/// Checks a username as typed and returns it trimmed: 1–150 letters, digits or `@.+-_` (Django's set,
/// with Unicode letters and digits).
pub fn validate(name: &str) -> Result<&str, Error> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::Invalid("the username must not be empty"));
    }
    if name.chars().count() > MAX_LEN {
        return Err(Error::Invalid("the username is longer than 150 characters"));
    }
    if !name.chars().all(|c| c.is_alphanumeric() || "@.+-_".contains(c)) {
        return Err(Error::Invalid("a username may hold only letters, digits and @ . + - _"));
    }
    Ok(name)
}

/// The key two names share exactly when they differ only in case or Unicode form: NFKC, then full
/// Unicode case folding, then NFKC again ("Straße", "STRASSE" and "strasse" share one key). Computed in
/// Rust so that SQLite and Postgres agree.
pub fn fold(name: &str) -> String {
    let normalized: String = name.trim().nfkc().collect();
    caseless::default_case_fold_str(&normalized).nfkc().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_differing_only_in_case_share_a_key() {
        assert_eq!(fold("Alice"), fold("aLICE"));
        assert_eq!(fold("Straße"), fold("STRASSE"));
        assert_eq!(fold("ＡＬＩＣＥ"), fold("alice"), "full-width letters fold to ASCII");
        assert_ne!(fold("alice"), fold("alicia"));
    }

    #[test]
    fn usernames_are_checked() {
        assert_eq!(validate("  bob ").ok(), Some("bob"));
        assert!(validate("").is_err());
        assert!(validate("a b").is_err());
        assert!(validate("<script>").is_err());
        assert!(validate(&"x".repeat(151)).is_err());
        assert!(validate("zoë.k+1@example").is_ok());
    }
}
