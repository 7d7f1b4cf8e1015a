//! Splitting a migration file into statements, recognising the statements that are skipped on
//! purpose, and parsing the rest with sqlparser's PostgreSQL dialect.

use std::fmt;

use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Tokenizer, Whitespace};

/// Statements that cannot change a table's columns, recognised by their leading keywords and
/// skipped on purpose. They are not parsed: sqlparser does not cover all of them (DO blocks,
/// some function bodies), and PostgreSQL itself checks them when the migration runs.
pub const SKIPPED_STATEMENTS: &[&[&str]] = &[
    &["CREATE", "INDEX"],
    &["CREATE", "UNIQUE", "INDEX"],
    &["DROP", "INDEX"],
    &["ALTER", "INDEX"],
    &["REINDEX"],
    &["CREATE", "FUNCTION"],
    &["CREATE", "OR", "REPLACE", "FUNCTION"],
    &["CREATE", "PROCEDURE"],
    &["CREATE", "OR", "REPLACE", "PROCEDURE"],
    &["ALTER", "FUNCTION"],
    &["DROP", "FUNCTION"],
    &["DROP", "PROCEDURE"],
    &["CREATE", "TRIGGER"],
    &["CREATE", "OR", "REPLACE", "TRIGGER"],
    &["CREATE", "CONSTRAINT", "TRIGGER"],
    &["DROP", "TRIGGER"],
    &["CREATE", "EXTENSION"],
    &["DROP", "EXTENSION"],
    &["CREATE", "SEQUENCE"],
    &["ALTER", "SEQUENCE"],
    &["DROP", "SEQUENCE"],
    &["CREATE", "VIEW"],
    &["CREATE", "OR", "REPLACE", "VIEW"],
    &["DROP", "VIEW"],
    &["CREATE", "POLICY"],
    &["ALTER", "POLICY"],
    &["DROP", "POLICY"],
    &["COMMENT", "ON", "POLICY"],
    &["COMMENT", "ON", "FUNCTION"],
    &["GRANT"],
    &["REVOKE"],
    &["DO"],
    &["SET"],
    &["RESET"],
    &["BEGIN"],
    &["START", "TRANSACTION"],
    &["COMMIT"],
    &["END"],
    &["ANALYZE"],
    &["VACUUM"],
    &["SELECT"],
    &["INSERT"],
    &["UPDATE"],
    &["DELETE"],
];

/// A position in a migration file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pos {
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub col: u64,
}

impl From<Location> for Pos {
    fn from(l: Location) -> Self {
        Pos {
            line: l.line,
            col: l.column,
        }
    }
}

/// An error located in a migration file: `file:line:col: message`, then the statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedError {
    /// The file, as given to the generator (relative to the workspace root).
    pub file: String,
    /// Where in the file.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
    /// The statement's text (trimmed), or empty when the error is not in one statement.
    pub statement: String,
}

impl fmt::Display for LocatedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.pos.line, self.pos.col, self.message
        )?;
        if !self.statement.is_empty() {
            const MAX: usize = 400;
            let mut text: String = self.statement.chars().take(MAX).collect();
            if self.statement.chars().count() > MAX {
                text.push_str(" …");
            }
            for line in text.lines() {
                write!(f, "\n    | {line}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for LocatedError {}

/// One statement of a migration file.
#[derive(Debug, Clone)]
pub struct RawStatement {
    /// Where its first token starts.
    pub pos: Pos,
    /// Its text, trimmed, without the closing semicolon.
    pub text: String,
    /// Its tokens (whitespace and comments included), without the closing semicolon.
    pub tokens: Vec<TokenWithSpan>,
}

impl RawStatement {
    /// The first (up to four) keywords, upper-cased.
    pub fn leading_words(&self) -> Vec<String> {
        self.tokens
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .take(4)
            .map_while(|t| match &t.token {
                Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
                _ => None,
            })
            .collect()
    }

    /// True if the statement is one of [`SKIPPED_STATEMENTS`].
    pub fn is_skipped(&self) -> bool {
        let words = self.leading_words();
        SKIPPED_STATEMENTS.iter().any(|prefix| {
            prefix.len() <= words.len() && prefix.iter().zip(&words).all(|(p, w)| p == w)
        })
    }

    /// The `--` comment lines directly above each token index: for token `i`, the consecutive
    /// single-line comments that precede it with no blank line and no other token in between.
    pub fn comment_lines_before(&self, index: usize) -> Vec<String> {
        let mut lines = Vec::new();
        let mut newlines = 0;
        for t in self.tokens[..index].iter().rev() {
            match &t.token {
                Token::Whitespace(Whitespace::Newline) => {
                    newlines += 1;
                    if newlines > 1 {
                        break;
                    }
                }
                Token::Whitespace(Whitespace::SingleLineComment { comment, prefix })
                    if prefix == "--" =>
                {
                    // The tokenizer keeps the newline inside the comment token.
                    newlines = 0;
                    lines.push(comment.trim().to_string());
                }
                Token::Whitespace(Whitespace::Space | Whitespace::Tab) => {}
                _ => break,
            }
        }
        lines.reverse();
        lines
    }

    /// Parses the statement with sqlparser. Exactly one statement must be there.
    pub fn parse(&self, file: &str) -> Result<Statement, LocatedError> {
        let dialect = PostgreSqlDialect {};
        // An explicit end-of-statement token where the statement ends, so "found: EOF" errors
        // carry a position.
        let mut tokens = self.tokens.clone();
        let end = tokens
            .iter()
            .rev()
            .find(|t| !matches!(t.token, Token::Whitespace(_)))
            .map_or(self.pos_location(), |t| t.span.end);
        tokens.push(TokenWithSpan::new(Token::EOF, Span::new(end, end)));
        let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
        let statement = parser
            .parse_statement()
            .map_err(|e| self.error(file, parser_error_pos(&e.to_string(), self.pos), e))?;
        let next = parser.peek_token();
        if next.token != Token::EOF {
            return Err(self.error(
                file,
                next.span.start.into(),
                format!("unexpected {} after the statement", next.token),
            ));
        }
        Ok(statement)
    }

    fn pos_location(&self) -> Location {
        Location::new(self.pos.line, self.pos.col)
    }

    /// An error at `pos` quoting this statement.
    pub fn error(&self, file: &str, pos: Pos, message: impl fmt::Display) -> LocatedError {
        LocatedError {
            file: file.to_string(),
            pos,
            message: message.to_string(),
            statement: self.text.clone(),
        }
    }
}

/// sqlparser reports positions only inside its message (`… at Line: 3, Column: 7`); read them
/// back, falling back to the statement start.
fn parser_error_pos(message: &str, fallback: Pos) -> Pos {
    let number_after = |key: &str| -> Option<u64> {
        let start = message.rfind(key)? + key.len();
        let digits: String = message[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    match (number_after("Line: "), number_after("Column: ")) {
        (Some(line), Some(col)) if line > 0 && col > 0 => Pos { line, col },
        _ => fallback,
    }
}

/// Splits `sql` into statements at top-level semicolons (the tokenizer keeps semicolons inside
/// strings, dollar-quoted bodies and comments). Empty statements are dropped.
pub fn split_statements(file: &str, sql: &str) -> Result<Vec<RawStatement>, LocatedError> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| LocatedError {
            file: file.to_string(),
            pos: e.location.into(),
            message: e.message.clone(),
            statement: String::new(),
        })?;
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let offset = |l: Location| -> usize {
        let line_start = line_starts
            .get((l.line.max(1) - 1) as usize)
            .copied()
            .unwrap_or(sql.len());
        // Columns count characters.
        sql[line_start..]
            .char_indices()
            .nth((l.column.max(1) - 1) as usize)
            .map_or(sql.len(), |(i, _)| line_start + i)
    };

    let mut statements = Vec::new();
    let mut current: Vec<TokenWithSpan> = Vec::new();
    let mut flush = |current: &mut Vec<TokenWithSpan>| {
        let tokens = std::mem::take(current);
        let significant: Vec<&TokenWithSpan> = tokens
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
            .collect();
        let (Some(first), Some(last)) = (significant.first(), significant.last()) else {
            return;
        };
        let start = offset(first.span.start);
        let end = offset(last.span.end).max(start);
        statements.push(RawStatement {
            pos: first.span.start.into(),
            text: sql[start..end].trim().to_string(),
            tokens,
        });
    };
    for token in tokens {
        if token.token == Token::SemiColon {
            flush(&mut current);
        } else {
            current.push(token);
        }
    }
    flush(&mut current);
    Ok(statements)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_top_level_semicolons_only() {
        let sql = "CREATE TABLE a (x text DEFAULT ';');\n\
                   DO $$ BEGIN PERFORM 1; END $$;\n\
                   -- trailing comment only\n";
        let statements = split_statements("f.sql", sql).unwrap();
        assert_eq!(statements.len(), 2);
        assert_eq!(statements[0].text, "CREATE TABLE a (x text DEFAULT ';')");
        assert_eq!(statements[0].pos, Pos { line: 1, col: 1 });
        assert_eq!(statements[1].text, "DO $$ BEGIN PERFORM 1; END $$");
        assert_eq!(statements[1].pos, Pos { line: 2, col: 1 });
        assert!(statements[1].is_skipped());
        assert!(!statements[0].is_skipped());
    }

    #[test]
    fn reads_comment_lines_directly_above() {
        let sql = "CREATE TABLE a (\n  -- far\n\n  -- near one\n  -- near two\n  x int\n)";
        let statement = &split_statements("f.sql", sql).unwrap()[0];
        let x = statement
            .tokens
            .iter()
            .position(|t| matches!(&t.token, Token::Word(w) if w.value == "x"))
            .unwrap();
        assert_eq!(statement.comment_lines_before(x), ["near one", "near two"]);
    }

    #[test]
    fn syntax_error_position_comes_from_the_parser() {
        let sql = "\n\nCREATE TABLE a (x int,, y int)";
        let statement = &split_statements("f.sql", sql).unwrap()[0];
        let err = statement.parse("f.sql").unwrap_err();
        assert_eq!((err.pos.line, err.pos.col), (3, 23), "{err}");
    }

    #[test]
    fn unterminated_string_is_a_located_tokenizer_error() {
        let err = split_statements("f.sql", "SELECT 1;\nSELECT 'oops").unwrap_err();
        assert_eq!((err.pos.line, err.pos.col), (2, 8), "{err}");
    }
}
