//! How counts read in what the client prints: "1 file", "2 files", never
//! "file(s)". Shared by the picker and `ferry send` so both say the same.

/// `n` and the noun, made plural the regular way (with an "s").
pub fn plural(n: usize, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// `n` and the noun, for nouns whose plural is not just an "s".
pub fn plural_as(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_and_everything_else_plural() {
        assert_eq!(plural(1, "file"), "1 file");
        assert_eq!(plural(0, "file"), "0 files");
        assert_eq!(plural(2, "file"), "2 files");
        assert_eq!(plural_as(1, "name clash", "name clashes"), "1 name clash");
        assert_eq!(plural_as(3, "name clash", "name clashes"), "3 name clashes");
    }
}
