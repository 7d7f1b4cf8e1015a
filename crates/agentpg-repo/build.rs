//! Rebuild when a migration is added or changed: `sqlx::migrate!` reads the folder at compile
//! time, and cargo does not know about files a macro reads.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
