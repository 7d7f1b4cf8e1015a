//! Helpers for the workspace-level integration tests: the migration files on disk, applying
//! them, and a normalized snapshot of the PostgreSQL catalog to compare schemas by.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use regex::Regex;
use sqlx::PgConnection;

/// golang-migrate's file name rule; sqlx reads the same names.
pub const GOLANG_MIGRATE_FILE_RULE: &str = r"^([0-9]+)_(.*)\.(down|up)\.(.*)$";

/// The workspace root (the folder holding the workspace `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits one level below the workspace root")
        .to_path_buf()
}

/// The workspace `migrations/` folder.
pub fn migrations_dir() -> PathBuf {
    workspace_root().join("migrations")
}

/// One migration version: its up and down files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Numeric version (the leading digits of the file name).
    pub version: u64,
    /// The name between the version and the direction, e.g. `create_sessions`.
    pub name: String,
    /// Path of the `.up.sql` file.
    pub up: PathBuf,
    /// Path of the `.down.sql` file.
    pub down: PathBuf,
}

impl Migration {
    /// The up file's SQL.
    pub fn up_sql(&self) -> String {
        read(&self.up)
    }

    /// The down file's SQL.
    pub fn down_sql(&self) -> String {
        read(&self.down)
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The names of the migration files in `dir`: every regular file except `README.md`.
pub fn migration_file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry"))
        .filter(|entry| entry.file_type().expect("file type").is_file())
        .map(|entry| entry.file_name().into_string().expect("UTF-8 file name"))
        .filter(|name| name != "README.md")
        .collect();
    names.sort();
    names
}

/// Pairs the files in `dir` into migrations sorted by numeric version.
///
/// Panics naming the file if a name breaks [`GOLANG_MIGRATE_FILE_RULE`], a version has two
/// names, a version repeats a direction, or an up lacks its down (or the reverse).
pub fn migrations_in(dir: &Path) -> Vec<Migration> {
    let rule = Regex::new(GOLANG_MIGRATE_FILE_RULE).expect("valid regex");
    let mut found: std::collections::BTreeMap<u64, (String, Option<PathBuf>, Option<PathBuf>)> =
        std::collections::BTreeMap::new();
    for file in migration_file_names(dir) {
        let caps = rule
            .captures(&file)
            .unwrap_or_else(|| panic!("{file}: does not match {GOLANG_MIGRATE_FILE_RULE}"));
        assert_eq!(&caps[4], "sql", "{file}: migrations must be .sql files");
        let version: u64 = caps[1]
            .parse()
            .unwrap_or_else(|e| panic!("{file}: version {}: {e}", &caps[1]));
        let entry = found
            .entry(version)
            .or_insert_with(|| (caps[2].to_string(), None, None));
        assert_eq!(
            entry.0, &caps[2],
            "{file}: version {version} already has the name {:?}",
            entry.0
        );
        let slot = if &caps[3] == "up" {
            &mut entry.1
        } else {
            &mut entry.2
        };
        assert!(
            slot.is_none(),
            "{file}: version {version} has two {} files",
            &caps[3]
        );
        *slot = Some(dir.join(&file));
    }
    found
        .into_iter()
        .map(|(version, (name, up, down))| Migration {
            up: up.unwrap_or_else(|| panic!("version {version} ({name}) has no .up.sql")),
            down: down.unwrap_or_else(|| panic!("version {version} ({name}) has no .down.sql")),
            version,
            name,
        })
        .collect()
}

/// The project's migrations, in numeric version order.
pub fn migrations() -> Vec<Migration> {
    migrations_in(&migrations_dir())
}

/// `DATABASE_URL` with its database name replaced by `database`.
pub fn database_url_for(database: &str) -> String {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL is set (see README)");
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url.as_str(), None),
    };
    let authority_end = base
        .find("://")
        .map(|scheme| {
            let rest = scheme + 3;
            base[rest..].find('/').map_or(base.len(), |i| rest + i)
        })
        .expect("DATABASE_URL is a postgres:// URL");
    let mut out = format!("{}/{}", &base[..authority_end], database);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// The name of the database `conn` is connected to.
pub async fn current_database(conn: &mut PgConnection) -> String {
    sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(conn)
        .await
        .expect("current_database()")
}

/// Runs `file` with the `psql` binary exactly as migrations/README.md says:
/// `psql -v ON_ERROR_STOP=1 -1 -f FILE`. Panics with psql's output on failure.
pub fn psql_apply(database_url: &str, file: &Path) {
    let output = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f"])
        .arg(file)
        .arg(database_url)
        .output()
        .expect("running psql (install PostgreSQL's client, see README)");
    assert!(
        output.status.success(),
        "psql -f {} failed ({}):\n{}{}",
        file.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `sql` (several statements allowed) in one transaction on `conn`.
///
/// `sql` is a migration script the test read from the repository, run as a script the way
/// `psql -1 -f` runs it; it carries no data from outside, hence the safety assertion.
pub async fn apply_sql(conn: &mut PgConnection, label: &str, sql: &str) {
    let wrapped = format!("BEGIN;\n{sql}\n;COMMIT;");
    if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(wrapped))
        .execute(&mut *conn)
        .await
    {
        // Leave the connection usable for the caller's diagnostics.
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
        panic!("{label}: {e}");
    }
}

/// A normalized, order-independent description of everything in the `public` schema (and the
/// installed extensions): columns with position, type, nullability, default, identity and
/// generation; constraints and indexes with their definitions; sequences with their settings;
/// enum types and domains; functions; triggers; views; comments.
///
/// sqlx's own bookkeeping table `_sqlx_migrations` is left out, so a schema applied by psql and
/// one applied by the embedded migrator compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog(pub BTreeSet<String>);

impl Catalog {
    /// True if the schema holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The lines of `self` missing from `other`.
    pub fn missing_from<'a>(&'a self, other: &'a Catalog) -> impl Iterator<Item = &'a String> {
        self.0.difference(&other.0)
    }
}

impl fmt::Display for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.0 {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

const CATALOG_QUERY: &str = r#"
WITH rels AS (
    SELECT c.oid, c.relname, c.relkind
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public'
      AND c.relname NOT IN ('_sqlx_migrations', '_sqlx_migrations_pkey')
)
SELECT format('relation %s kind=%s', r.relname, r.relkind)
FROM rels r
UNION ALL
SELECT format('column %s.%s #%s %s%s%s%s%s',
    r.relname, a.attname,
    row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
    format_type(a.atttypid, a.atttypmod),
    CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
    CASE WHEN a.attgenerated = 's' THEN ' generated always as ' || pg_get_expr(d.adbin, d.adrelid) || ' stored'
         WHEN d.adbin IS NOT NULL THEN ' default ' || pg_get_expr(d.adbin, d.adrelid)
         ELSE '' END,
    CASE a.attidentity WHEN 'a' THEN ' identity always' WHEN 'd' THEN ' identity by default' ELSE '' END,
    CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
         THEN ' collate ' || a.attcollation::regcollation::text ELSE '' END)
FROM rels r
JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE r.relkind IN ('r', 'p', 'v', 'm', 'f')
UNION ALL
SELECT format('constraint %s.%s %s%s',
    coalesce(r.relname, co.contypid::regtype::text), co.conname, pg_get_constraintdef(co.oid),
    CASE WHEN co.condeferrable THEN ' deferrable' ELSE '' END)
FROM pg_constraint co
JOIN pg_namespace n ON n.oid = co.connamespace
LEFT JOIN rels r ON r.oid = co.conrelid
WHERE n.nspname = 'public' AND (co.conrelid = 0 OR r.oid IS NOT NULL)
UNION ALL
SELECT format('index %s', pg_get_indexdef(i.indexrelid))
FROM pg_index i JOIN rels r ON r.oid = i.indexrelid
UNION ALL
SELECT format('sequence %s type=%s start=%s increment=%s min=%s max=%s cache=%s cycle=%s owned_by=%s',
    r.relname, s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
    (SELECT format('%s.%s', dc.relname, da.attname)
       FROM pg_depend dp
       JOIN pg_class dc ON dc.oid = dp.refobjid
       JOIN pg_attribute da ON da.attrelid = dp.refobjid AND da.attnum = dp.refobjsubid
      WHERE dp.classid = 'pg_class'::regclass AND dp.objid = r.oid AND dp.deptype IN ('a', 'i')
      LIMIT 1))
FROM pg_sequence s JOIN rels r ON r.oid = s.seqrelid
UNION ALL
SELECT format('view %s %s', r.relname, pg_get_viewdef(r.oid))
FROM rels r WHERE r.relkind IN ('v', 'm')
UNION ALL
SELECT format('type %s kind=%s%s%s', t.typname, t.typtype,
    CASE WHEN t.typtype = 'e' THEN ' labels=' || (
        SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid)
    ELSE '' END,
    CASE WHEN t.typtype = 'd' THEN ' base=' || format_type(t.typbasetype, t.typtypmod)
         || CASE WHEN t.typnotnull THEN ' not null' ELSE '' END ELSE '' END)
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = 'public'
  AND t.typtype IN ('e', 'd', 'c', 'r', 'b')
  AND t.typelem = 0 AND NOT (t.typtype = 'c' AND t.typrelid IN (SELECT oid FROM pg_class WHERE relkind <> 'c'))
  AND t.typname NOT IN ('_sqlx_migrations')
UNION ALL
SELECT format('function %s', pg_get_functiondef(p.oid))
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public' AND p.prokind IN ('f', 'p')
UNION ALL
SELECT format('trigger %s', pg_get_triggerdef(tg.oid))
FROM pg_trigger tg JOIN rels r ON r.oid = tg.tgrelid
WHERE NOT tg.tgisinternal
UNION ALL
SELECT format('extension %s', e.extname) FROM pg_extension e WHERE e.extname <> 'plpgsql'
UNION ALL
SELECT format('row security %s enabled=%s forced=%s', r.relname, c.relrowsecurity, c.relforcerowsecurity)
FROM rels r JOIN pg_class c ON c.oid = r.oid WHERE r.relkind IN ('r', 'p')
UNION ALL
SELECT format('policy %s.%s permissive=%s cmd=%s roles=%s using=%s check=%s comment=%s',
    r.relname, po.polname, po.polpermissive, po.polcmd,
    (SELECT string_agg(CASE WHEN x = 0 THEN 'public' ELSE x::regrole::text END, ',' ORDER BY 1)
       FROM unnest(po.polroles) AS x),
    pg_get_expr(po.polqual, po.polrelid), pg_get_expr(po.polwithcheck, po.polrelid),
    obj_description(po.oid, 'pg_policy'))
FROM pg_policy po JOIN rels r ON r.oid = po.polrelid
UNION ALL
SELECT format('grant %s %s %s', r.relname,
    CASE WHEN x.grantee = 0 THEN 'public' ELSE x.grantee::regrole::text END, x.privilege_type)
FROM rels r JOIN pg_class c ON c.oid = r.oid, aclexplode(c.relacl) AS x
WHERE x.grantee <> c.relowner
UNION ALL
SELECT format('grant schema public %s %s', x.grantee::regrole, x.privilege_type)
FROM pg_namespace n, aclexplode(n.nspacl) AS x
WHERE n.nspname = 'public' AND x.grantee <> 0 AND x.grantee <> n.nspowner
UNION ALL
SELECT format('comment %s%s = %s', r.relname,
    CASE WHEN d.objsubid = 0 THEN '' ELSE '.' || a.attname END, quote_literal(d.description))
FROM pg_description d
JOIN rels r ON d.classoid = 'pg_class'::regclass AND d.objoid = r.oid
LEFT JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum = d.objsubid
UNION ALL
SELECT format('comment %s = %s', coalesce(t.typname, p.proname || '()', co.conname), quote_literal(d.description))
FROM pg_description d
LEFT JOIN pg_type t ON d.classoid = 'pg_type'::regclass AND t.oid = d.objoid
LEFT JOIN pg_proc p ON d.classoid = 'pg_proc'::regclass AND p.oid = d.objoid
LEFT JOIN pg_constraint co ON d.classoid = 'pg_constraint'::regclass AND co.oid = d.objoid
WHERE coalesce(t.typnamespace, p.pronamespace, co.connamespace) = 'public'::regnamespace
"#;

/// Takes a [`Catalog`] snapshot of the database `conn` is connected to.
pub async fn catalog(conn: &mut PgConnection) -> Catalog {
    let lines: Vec<String> = sqlx::query_scalar(CATALOG_QUERY)
        .fetch_all(conn)
        .await
        .expect("catalog query");
    Catalog(lines.into_iter().collect())
}

/// Panics with the lines only on one side if `actual` differs from `expected`.
#[track_caller]
pub fn assert_same_catalog(expected: &Catalog, actual: &Catalog, context: &str) {
    if expected == actual {
        return;
    }
    let mut report = format!("catalog differs: {context}\n");
    for line in expected.missing_from(actual) {
        report.push_str(&format!("  - {line}\n"));
    }
    for line in actual.missing_from(expected) {
        report.push_str(&format!("  + {line}\n"));
    }
    panic!("{report}");
}
