//! Building SQL text at codegen time: quoted identifiers, parameter casts, column lists.

use crate::codegen::model::SqlType;

/// `name` as a quoted SQL identifier (`"name"`, inner quotes doubled).
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"a", "b", …` for `names`.
pub(crate) fn idents<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names.into_iter().map(ident).collect::<Vec<_>>().join(", ")
}

/// The SQL type a parameter of type `ty` is cast to, so that every statement's parameter types
/// are fixed by its text (varchar and char parameters are unbounded: the column's own type
/// checks the length when the value is stored).
pub(crate) fn cast_type(ty: &SqlType) -> String {
    match ty {
        SqlType::Char => "bpchar".into(),
        SqlType::Array(inner) => format!("{}[]", cast_type(inner)),
        SqlType::Enum(name) => ident(name),
        other => other.pg_typname(),
    }
}

/// The parameters of a statement being written: hands out `$1`, `$2`, … in the order they are
/// asked for, which is the order the generated binder binds them in.
#[derive(Debug, Default)]
pub(crate) struct Params {
    count: usize,
}

impl Params {
    /// The next placeholder, cast to `cast` (`$3::uuid`).
    pub(crate) fn next(&mut self, cast: &str) -> String {
        self.count += 1;
        format!("${}::{cast}", self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_casts() {
        assert_eq!(ident("Audit Log"), "\"Audit Log\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(cast_type(&SqlType::Char), "bpchar");
        assert_eq!(
            cast_type(&SqlType::Array(Box::new(SqlType::Enum(
                "doc_status".into()
            )))),
            "\"doc_status\"[]"
        );
        let mut p = Params::default();
        assert_eq!(p.next("uuid"), "$1::uuid");
        assert_eq!(p.next("text[]"), "$2::text[]");
    }
}
