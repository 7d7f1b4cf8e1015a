//! Property tests: no input makes the parser and replay panic, and every failure is located
//! inside the file.

use proptest::prelude::*;
use xtask::codegen::model::Schema;
use xtask::codegen::replay::replay_file;

/// The real migrations and the fixture, concatenated, as seeds for mutation.
fn seeds() -> Vec<String> {
    let root = xtask::workspace_root();
    let mut out = Vec::new();
    for dir in ["migrations", "tests/fixture-schema/migrations"] {
        for m in xtask::codegen::read_migrations(&root.join(dir), dir).unwrap() {
            out.push(m.pair.up.0);
        }
    }
    out
}

const FRAGMENTS: &[&str] = &[
    "(",
    ")",
    ",",
    ";",
    "'",
    "\"",
    "$$",
    "--",
    "/*",
    "*/",
    "ALTER TABLE ",
    "DROP ",
    "COLUMN ",
    "CREATE TABLE ",
    "TYPE ",
    "NOT NULL",
    "DEFAULT ",
    "PRIMARY KEY",
    "REFERENCES ",
    "CHECK (",
    "GENERATED ALWAYS AS (",
    ") STORED",
    "AS IDENTITY",
    "[]",
    "::",
    "IN (",
    "ENUM (",
    "RENAME ",
    "TO ",
    "IF EXISTS ",
    "COMMENT ON COLUMN ",
    " IS ",
    "public.",
    "\u{0}",
    "é",
    "\n",
    "9999999999999999999999",
];

fn check(sql: &str) {
    let mut schema = Schema::default();
    if let Err(e) = replay_file(&mut schema, "fuzz.sql", sql) {
        let lines = sql.split('\n').count() as u64;
        assert!(
            e.pos.line >= 1 && e.pos.line <= lines && e.pos.col >= 1,
            "error outside the file ({} lines): {e}",
            lines
        );
        assert!(!e.message.is_empty());
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Delete { at: usize, len: usize },
    Insert { at: usize, fragment: usize },
    Duplicate { at: usize, len: usize },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<usize>(), 0..FRAGMENTS.len())
            .prop_map(|(at, fragment)| Edit::Insert { at, fragment }),
        (any::<usize>(), 1usize..80).prop_map(|(at, len)| Edit::Duplicate { at, len }),
    ]
}

fn apply(sql: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = sql.chars().collect();
    for e in edits {
        let n = chars.len().max(1);
        match *e {
            Edit::Delete { at, len } => {
                let at = at % n;
                let end = (at + len).min(chars.len());
                chars.drain(at.min(chars.len())..end);
            }
            Edit::Insert { at, fragment } => {
                let at = (at % n).min(chars.len());
                let text: Vec<char> = FRAGMENTS[fragment].chars().collect();
                chars.splice(at..at, text);
            }
            Edit::Duplicate { at, len } => {
                let at = (at % n).min(chars.len());
                let end = (at + len).min(chars.len());
                let copy: Vec<char> = chars[at..end].to_vec();
                chars.splice(at..at, copy);
            }
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(sql in "\\PC{0,300}") {
        check(&sql);
    }

    #[test]
    fn sql_shaped_noise_never_panics(parts in prop::collection::vec(0..FRAGMENTS.len(), 0..60)) {
        let sql: String = parts.into_iter().map(|i| FRAGMENTS[i]).collect();
        check(&sql);
    }

    #[test]
    fn mutated_migrations_never_panic(seed in 0usize..7, edits in prop::collection::vec(edit(), 1..6)) {
        let seeds = seeds();
        let sql = apply(&seeds[seed % seeds.len()], &edits);
        check(&sql);
    }
}
