//! The distribution-column lint: each rule, each error located where the table or constraint
//! is declared, and the project's own migrations clean.

use xtask::codegen::lint::distribution;
use xtask::codegen::model::Schema;
use xtask::codegen::replay::replay_file;

/// The lint's errors for `sql` as `(line, col, message)`.
fn lint(sql: &str) -> Vec<(u64, u64, String)> {
    let mut schema = Schema::default();
    replay_file(&mut schema, "m.sql", sql).unwrap_or_else(|e| panic!("{e}"));
    distribution(&schema, "tenant_id")
        .into_iter()
        .map(|e| {
            assert_eq!(e.file, "m.sql");
            assert!(!e.statement.is_empty(), "the statement is shown");
            (e.pos.line, e.pos.col, e.message)
        })
        .collect()
}

#[test]
fn a_schema_keyed_by_tenant_passes() {
    assert_eq!(
        lint(
            "CREATE TABLE s (tenant_id text NOT NULL, id uuid NOT NULL, name text,
                 PRIMARY KEY (tenant_id, id), UNIQUE (tenant_id, name));
             CREATE TABLE m (tenant_id text NOT NULL, id uuid NOT NULL, s_id uuid NOT NULL,
                 CONSTRAINT m_pkey PRIMARY KEY (id, tenant_id),
                 CONSTRAINT m_s_fkey FOREIGN KEY (tenant_id, s_id) REFERENCES s (tenant_id, id));
             CREATE TABLE n (tenant_id text NOT NULL, id uuid NOT NULL, s_id uuid,
                 FOREIGN KEY (tenant_id, s_id) REFERENCES s);"
        ),
        vec![]
    );
}

#[test]
fn a_table_without_the_column_is_located_at_its_name() {
    let errors =
        lint("CREATE TABLE t (tenant_id text);\n\nCREATE TABLE   plain (id uuid PRIMARY KEY);");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (line, col, message) = &errors[0];
    assert_eq!((*line, *col), (3, 16));
    assert!(
        message.contains("table plain has no distribution column tenant_id"),
        "{message}"
    );
}

#[test]
fn keys_without_the_column_are_located_at_the_constraint() {
    let errors = lint(
        "CREATE TABLE t (
    tenant_id text NOT NULL,
    id uuid PRIMARY KEY,
    code text,
    CONSTRAINT t_code_key UNIQUE (code)
);
ALTER TABLE t ADD CONSTRAINT t_id_code_key UNIQUE (id, code);",
    );
    let located: Vec<(u64, u64)> = errors.iter().map(|(l, c, _)| (*l, *c)).collect();
    // The inline primary key at its column; named constraints at their names.
    assert_eq!(located, vec![(3, 5), (5, 16), (7, 30)], "{errors:?}");
    assert!(
        errors[0].2.contains("primary key t_pkey of table t (id)"),
        "{}",
        errors[0].2
    );
    assert!(
        errors[1].2.contains("unique constraint t_code_key"),
        "{}",
        errors[1].2
    );
    assert!(
        errors[2].2.contains("unique constraint t_id_code_key"),
        "{}",
        errors[2].2
    );
}

#[test]
fn foreign_keys_must_carry_the_column_onto_the_targets_own() {
    let errors = lint(
        "CREATE TABLE p (tenant_id text NOT NULL, id uuid NOT NULL, other text NOT NULL,
    PRIMARY KEY (tenant_id, id), UNIQUE (tenant_id, other), UNIQUE (other, tenant_id));
CREATE TABLE c (
    tenant_id text NOT NULL,
    p_id uuid REFERENCES p (id),
    other text,
    CONSTRAINT c_swapped_fkey FOREIGN KEY (tenant_id, other) REFERENCES p (other, tenant_id),
    CONSTRAINT c_ok_fkey FOREIGN KEY (tenant_id, other) REFERENCES p (tenant_id, other)
);",
    );
    let located: Vec<(u64, u64)> = errors.iter().map(|(l, c, _)| (*l, *c)).collect();
    assert_eq!(located, vec![(5, 5), (7, 16)], "{errors:?}");
    assert!(
        errors[0].2.contains("foreign key c_p_id_fkey of table c (p_id) -> p: does not include the distribution column tenant_id"),
        "{}",
        errors[0].2
    );
    assert!(
        errors[1]
            .2
            .contains("maps tenant_id of c onto p.other, not onto p.tenant_id"),
        "{}",
        errors[1].2
    );
}

#[test]
fn the_projects_migrations_pass_and_the_fixture_is_not_linted() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for target in xtask::codegen::config::TARGETS {
        let schema = xtask::codegen::target_schema(&root, target).unwrap();
        match target.distribution_column {
            Some(column) => {
                let errors = distribution(&schema, column);
                assert!(errors.is_empty(), "{}: {errors:?}", target.migrations);
            }
            None => {
                // The fixture has tables without a tenant: linting it would fail, so the
                // option is what keeps it out.
                assert!(!distribution(&schema, "tenant_id").is_empty());
            }
        }
    }
}
