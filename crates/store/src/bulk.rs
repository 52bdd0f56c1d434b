//! Many rows in one statement, on either backend.
//!
//! On PostgreSQL each column travels as ONE array parameter (`INSERT … SELECT * FROM UNNEST($1::text[],
//! …)`, `WHERE k IN (SELECT unnest($1::text[]))`). The statement text is then the same whatever the row count, so
//! every connection parses and plans it once, and the server reads a few arrays instead of binding
//! thousands of parameters: the multi-row `VALUES` form spent most of the database's CPU on exactly
//! that. The arrays go as text literals because the `Any` driver has no array types; PostgreSQL casts
//! them with the column types the statement names. Bytes are the exception: a bytea column goes as
//! its values end to end in one binary parameter, sliced per row (see [`pg_insert`]).
//!
//! SQLite has no arrays; there the rows go as multi-row `VALUES` lists and `IN` lists in power-of-two
//! chunks, so those statements too come in a handful of shapes.
use std::fmt::Write as _;

use sqlx::{AssertSqlSafe, FromRow, any::AnyRow};

use crate::{StoreError, Tx};

/// One value of a row written with [`insert`]. The null variants say which column type is null, so
/// a column's type is known even when every value in it is null.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    Text(String),
    Int(i64),
    Bytes(Vec<u8>),
    NullText,
    NullInt,
    NullBytes,
}

impl Val {
    pub fn opt_text(v: Option<String>) -> Val {
        v.map(Val::Text).unwrap_or(Val::NullText)
    }

    pub fn opt_int(v: Option<i64>) -> Val {
        v.map(Val::Int).unwrap_or(Val::NullInt)
    }

    fn is_bytes(&self) -> bool {
        matches!(self, Val::Bytes(_) | Val::NullBytes)
    }

    fn pg_type(&self) -> &'static str {
        match self {
            Val::Text(_) | Val::NullText => "text",
            Val::Int(_) | Val::NullInt => "int8",
            Val::Bytes(_) | Val::NullBytes => "bytea",
        }
    }
}

impl From<String> for Val {
    fn from(s: String) -> Val {
        Val::Text(s)
    }
}

impl From<&str> for Val {
    fn from(s: &str) -> Val {
        Val::Text(s.to_owned())
    }
}

impl From<i64> for Val {
    fn from(n: i64) -> Val {
        Val::Int(n)
    }
}

impl From<Vec<u8>> for Val {
    fn from(b: Vec<u8>) -> Val {
        Val::Bytes(b)
    }
}

/// Rows of equal width, kept flat.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    width: usize,
    vals: Vec<Val>,
}

impl Rows {
    pub fn new(width: usize) -> Rows {
        Rows {
            width,
            vals: Vec::new(),
        }
    }

    pub fn with_capacity(width: usize, rows: usize) -> Rows {
        Rows {
            width,
            vals: Vec::with_capacity(width * rows),
        }
    }

    /// Appends one row; it must have exactly `width` values.
    pub fn push(&mut self, row: impl IntoIterator<Item = Val>) {
        let before = self.vals.len();
        self.vals.extend(row);
        assert_eq!(
            self.vals.len() - before,
            self.width,
            "a row must have as many values as the statement has columns"
        );
    }

    pub fn len(&self) -> usize {
        self.vals.len().checked_div(self.width).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.vals.is_empty()
    }

    fn rows(&self) -> impl Iterator<Item = &[Val]> {
        self.vals.chunks(self.width.max(1))
    }
}

impl From<Vec<Vec<Val>>> for Rows {
    /// Rows built one `Vec` each; all must be as wide as the first.
    fn from(rows: Vec<Vec<Val>>) -> Rows {
        let width = rows.first().map_or(0, Vec::len);
        let mut out = Rows::with_capacity(width, rows.len());
        for row in rows {
            out.push(row);
        }
        out
    }
}

/// Rows per PostgreSQL statement: bounds the size of one array parameter, not the plan.
const PG_ROWS: usize = 50_000;
/// Parameters per SQLite statement (its limit is 32,766).
const SQLITE_PARAMS: usize = 30_000;
/// Keys per SQLite `IN` list.
const SQLITE_IN: usize = 500;

/// True when the transaction runs on PostgreSQL (arrays available).
pub fn is_postgres(tx: &Tx<'_>) -> bool {
    use sqlx::Database as _;
    tx.backend_name() == sqlx::Postgres::NAME
}

/// `head` is `INSERT INTO t (a, b, …)`; `tail` is what follows the rows (`ON CONFLICT …`) or empty.
/// Returns the rows affected.
pub async fn insert(
    tx: &mut Tx<'_>,
    head: &str,
    rows: &Rows,
    tail: &str,
) -> Result<u64, StoreError> {
    let mut affected = 0;
    for (sql, args) in statements(tx, head, rows, tail)? {
        affected += sqlx::query_with(AssertSqlSafe(sql), args)
            .execute(&mut **tx)
            .await?
            .rows_affected();
    }
    Ok(affected)
}

/// [`insert`] with a `RETURNING` tail, decoding the returned rows.
pub async fn insert_returning<T>(
    tx: &mut Tx<'_>,
    head: &str,
    rows: &Rows,
    tail: &str,
) -> Result<Vec<T>, StoreError>
where
    T: for<'r> FromRow<'r, AnyRow> + Send + Unpin,
{
    let mut out = Vec::new();
    for (sql, args) in statements(tx, head, rows, tail)? {
        out.extend(
            sqlx::query_as_with::<_, T, _>(AssertSqlSafe(sql), args)
                .fetch_all(&mut **tx)
                .await?,
        );
    }
    Ok(out)
}

type Args = sqlx::any::AnyArguments;

fn add<T>(args: &mut Args, v: T) -> Result<(), StoreError>
where
    T: for<'q> sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    use sqlx::Arguments as _;
    args.add(v)
        .map_err(|e| StoreError::Corrupt(format!("value does not bind: {e}")))
}

/// The statements (text and arguments) that write `rows`.
fn statements(
    tx: &Tx<'_>,
    head: &str,
    rows: &Rows,
    tail: &str,
) -> Result<Vec<(String, Args)>, StoreError> {
    let mut out = Vec::new();
    let all: Vec<&[Val]> = rows.rows().collect();
    let Some(first) = all.first() else {
        return Ok(out);
    };
    if is_postgres(tx) {
        let (sql, _) = pg_insert(head, first, tail, 1);
        for chunk in all.chunks(PG_ROWS) {
            let mut args = Args::default();
            pg_bind(&mut args, chunk, rows.width)?;
            out.push((sql.clone(), args));
        }
        return Ok(out);
    }
    let mut at = 0;
    for size in crate::pow2_chunks(all.len(), SQLITE_PARAMS / rows.width.max(1)) {
        let chunk = &all[at..at + size];
        at += size;
        let mut sql = String::with_capacity(head.len() + tail.len() + size * rows.width * 6);
        sql.push_str(head);
        sql.push_str(" VALUES ");
        let mut args = Args::default();
        let mut p = 0;
        for (i, row) in chunk.iter().enumerate() {
            sql.push_str(if i == 0 { "(" } else { ",(" });
            for (c, v) in row.iter().enumerate() {
                p += 1;
                let _ = write!(sql, "{}${p}", if c == 0 { "" } else { "," });
                match v {
                    Val::Text(s) => add(&mut args, s.clone())?,
                    Val::Int(n) => add(&mut args, *n)?,
                    Val::Bytes(b) => add(&mut args, b.clone())?,
                    Val::NullText => add(&mut args, None::<String>)?,
                    Val::NullInt => add(&mut args, None::<i64>)?,
                    Val::NullBytes => add(&mut args, None::<Vec<u8>>)?,
                }
            }
            sql.push(')');
        }
        sql.push_str(tail);
        out.push((sql, args));
    }
    Ok(out)
}

/// `{head} SELECT * FROM UNNEST($p::type[], …){tail}`, parameters numbered from `first_param`;
/// returns the statement and how many parameters it takes.
///
/// A bytea column does not travel as an array literal: PostgreSQL parses a `bytea[]` literal
/// character by character (`array_in`, then the hex of every element), which for a counter batch's
/// stored replies and certificates (≈ 1.8 kB a row) was 1.5 ms of a 2 ms statement. Its values go
/// as ONE binary `bytea` parameter, all of them end to end, with the start and length of each row
/// in two small integer arrays (NULL for a NULL value), sliced by `substring` per row.
fn pg_insert(head: &str, first: &[Val], tail: &str, first_param: usize) -> (String, usize) {
    let mut unnest = String::new();
    let mut select = String::new();
    let mut columns = String::new();
    let mut p = first_param;
    let mut k = 0;
    let mut sliced = false;
    for (c, v) in first.iter().enumerate() {
        let sep = if c == 0 { "" } else { "," };
        if v.is_bytes() {
            sliced = true;
            let _ = write!(unnest, "{sep}${p}::int4[],${}::int4[]", p + 1);
            let _ = write!(
                select,
                "{sep}substring(${}::bytea from k{k} for k{})",
                p + 2,
                k + 1
            );
            let _ = write!(columns, "{sep}k{k},k{}", k + 1);
            p += 3;
            k += 2;
        } else {
            let _ = write!(unnest, "{sep}${p}::{}[]", v.pg_type());
            let _ = write!(select, "{sep}k{k}");
            let _ = write!(columns, "{sep}k{k}");
            p += 1;
            k += 1;
        }
    }
    let sql = if sliced {
        format!("{head} SELECT {select} FROM UNNEST({unnest}) AS bulk_rows({columns}){tail}")
    } else {
        format!("{head} SELECT * FROM UNNEST({unnest}){tail}")
    };
    (sql, p - first_param)
}

/// Binds the parameters of [`pg_insert`]: one array literal per column, or for a bytea column the
/// starts, the lengths and the values end to end.
fn pg_bind(args: &mut Args, rows: &[&[Val]], width: usize) -> Result<(), StoreError> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    for c in 0..width {
        if !first[c].is_bytes() {
            add(args, array_literal(rows.iter().map(|r| &r[c])))?;
            continue;
        }
        let total: usize = rows
            .iter()
            .map(|r| match &r[c] {
                Val::Bytes(b) => b.len(),
                _ => 0,
            })
            .sum();
        if i32::try_from(total).is_err() {
            return Err(StoreError::Corrupt(format!(
                "{total} bytes in one bytea column of one statement"
            )));
        }
        let mut blob = Vec::with_capacity(total);
        let mut starts = String::with_capacity(rows.len() * 8 + 2);
        let mut lengths = String::with_capacity(rows.len() * 6 + 2);
        starts.push('{');
        lengths.push('{');
        for (i, r) in rows.iter().enumerate() {
            if i > 0 {
                starts.push(',');
                lengths.push(',');
            }
            match &r[c] {
                Val::Bytes(b) => {
                    // substring counts from 1.
                    starts.push_str(itoa::Buffer::new().format(blob.len() + 1));
                    lengths.push_str(itoa::Buffer::new().format(b.len()));
                    blob.extend_from_slice(b);
                }
                Val::NullBytes => {
                    starts.push_str("NULL");
                    lengths.push_str("NULL");
                }
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "column {c} holds bytes in its first row and {other:?} in row {i}"
                    )));
                }
            }
        }
        starts.push('}');
        lengths.push('}');
        add(args, starts)?;
        add(args, lengths)?;
        add(args, blob)?;
    }
    Ok(())
}

/// One insert of [`insert_all`]: `head` and `tail` as for [`insert`].
#[derive(Clone, Copy)]
pub struct Insert<'a> {
    pub head: &'a str,
    pub rows: &'a Rows,
    pub tail: &'a str,
}

/// Several inserts into different tables, in order. On PostgreSQL they go as ONE statement
/// (data-modifying `WITH` parts): a transaction that holds locks while it writes waits for one
/// round trip instead of one per table. On SQLite they run one after another.
pub async fn insert_all(tx: &mut Tx<'_>, parts: &[Insert<'_>]) -> Result<(), StoreError> {
    let parts: Vec<&Insert<'_>> = parts.iter().filter(|p| !p.rows.is_empty()).collect();
    let fits = parts.iter().all(|p| p.rows.len() <= PG_ROWS);
    if parts.len() < 2 || !fits || !is_postgres(tx) {
        for p in parts {
            insert(tx, p.head, p.rows, p.tail).await?;
        }
        return Ok(());
    }
    let mut sql = String::new();
    let mut args = Args::default();
    let mut param = 1;
    let last = parts.len() - 1;
    for (i, p) in parts.iter().enumerate() {
        let all: Vec<&[Val]> = p.rows.rows().collect();
        let (part, params) = pg_insert(p.head, all[0], p.tail, param);
        param += params;
        pg_bind(&mut args, &all, p.rows.width)?;
        if i == last {
            sql.push(' ');
            sql.push_str(&part);
        } else {
            let _ = write!(
                sql,
                "{}w{i} AS ({part})",
                if i == 0 { "WITH " } else { ", " }
            );
        }
    }
    sqlx::query_with(AssertSqlSafe(sql), args)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A PostgreSQL array literal (`{"a","b\"c",NULL}`) of one column's values.
pub fn array_literal<'a>(vals: impl Iterator<Item = &'a Val>) -> String {
    let mut s = String::from("{");
    for (i, v) in vals.enumerate() {
        if i > 0 {
            s.push(',');
        }
        match v {
            Val::Text(t) => push_quoted(&mut s, t),
            Val::Int(n) => s.push_str(itoa::Buffer::new().format(*n)),
            Val::Bytes(b) => {
                // The bytea hex form; the array literal's own escaping doubles the backslash.
                // Stored replies and certificates make this the bulk of a counter batch's
                // parameters: a table look-up per nibble, not the formatter.
                const HEX: &[u8; 16] = b"0123456789abcdef";
                s.reserve(b.len() * 2 + 6);
                s.push_str("\"\\\\x");
                for byte in b {
                    s.push(char::from(HEX[usize::from(byte >> 4)]));
                    s.push(char::from(HEX[usize::from(byte & 0x0f)]));
                }
                s.push('"');
            }
            Val::NullText | Val::NullInt | Val::NullBytes => s.push_str("NULL"),
        }
    }
    s.push('}');
    s
}

/// A PostgreSQL `text[]` literal of `keys`.
pub fn text_array(keys: &[String]) -> String {
    let mut s = String::with_capacity(keys.iter().map(|k| k.len() + 3).sum::<usize>() + 2);
    s.push('{');
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        push_quoted(&mut s, k);
    }
    s.push('}');
    s
}

fn push_quoted(s: &mut String, t: &str) {
    s.push('"');
    if !t.bytes().any(|b| b == b'"' || b == b'\\') {
        s.push_str(t);
        s.push('"');
        return;
    }
    for ch in t.chars() {
        if ch == '"' || ch == '\\' {
            s.push('\\');
        }
        s.push(ch);
    }
    s.push('"');
}

/// Rows of `{head} IN (keys…){tail}` for any number of keys. `head` ends with the key column
/// (`SELECT … FROM t WHERE k`); `tail` may order and lock (`ORDER BY k FOR UPDATE`).
pub async fn fetch_in<T>(
    tx: &mut Tx<'_>,
    head: &str,
    keys: &[String],
    tail: &str,
) -> Result<Vec<T>, StoreError>
where
    T: for<'r> FromRow<'r, AnyRow> + Send + Unpin,
{
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    if is_postgres(tx) {
        // A semi-join on the unnested array, not `= ANY($1::text[])`: the parameter is text cast to
        // text[], which a sequential scan would re-parse for every row it filters.
        let sql = format!("{head} IN (SELECT unnest($1::text[])){tail}");
        return Ok(sqlx::query_as::<_, T>(AssertSqlSafe(sql))
            .bind(text_array(keys))
            .fetch_all(&mut **tx)
            .await?);
    }
    let mut out = Vec::new();
    for chunk in keys.chunks(SQLITE_IN) {
        // Padding the list to a power of two (repeating the last key, harmless in IN) keeps the
        // statement to a few shapes.
        let width = chunk.len().next_power_of_two().max(4);
        let mut sql = String::with_capacity(head.len() + tail.len() + width * 5 + 8);
        sql.push_str(head);
        sql.push_str(" IN (");
        for i in 0..width {
            let _ = write!(sql, "{}${}", if i == 0 { "" } else { "," }, i + 1);
        }
        sql.push(')');
        sql.push_str(tail);
        let mut q = sqlx::query_as::<_, T>(AssertSqlSafe(sql));
        for i in 0..width {
            q = q.bind(chunk[i.min(chunk.len() - 1)].clone());
        }
        out.extend(q.fetch_all(&mut **tx).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_elements_are_quoted_and_escaped() {
        let vals = [
            Val::Text("a".into()),
            Val::Text("quote \" and \\ back".into()),
            Val::NullText,
            Val::Text(String::new()),
            Val::Text("{逗号,}".into()),
        ];
        assert_eq!(
            array_literal(vals.iter()),
            r#"{"a","quote \" and \\ back",NULL,"","{逗号,}"}"#
        );
    }

    #[test]
    fn ints_and_bytes() {
        assert_eq!(
            array_literal([Val::Int(-3), Val::NullInt, Val::Int(7)].iter()),
            "{-3,NULL,7}"
        );
        assert_eq!(
            array_literal([Val::Bytes(vec![0, 0xab]), Val::NullBytes].iter()),
            r#"{"\\x00ab",NULL}"#
        );
    }

    #[test]
    fn bytes_are_sliced_from_one_parameter() {
        let first = [Val::Text("a".into()), Val::NullBytes, Val::Int(1)];
        let (sql, params) = pg_insert(
            "INSERT INTO t (k, b, n)",
            &first,
            " ON CONFLICT DO NOTHING",
            4,
        );
        assert_eq!(
            sql,
            "INSERT INTO t (k, b, n) SELECT k0,substring($7::bytea from k1 for k2),k3 \
             FROM UNNEST($4::text[],$5::int4[],$6::int4[],$8::int8[]) AS bulk_rows(k0,k1,k2,k3) \
             ON CONFLICT DO NOTHING"
        );
        assert_eq!(params, 5);
        let (sql, params) = pg_insert("INSERT INTO t (k, n)", &first[..1], "", 1);
        assert_eq!(sql, "INSERT INTO t (k, n) SELECT * FROM UNNEST($1::text[])");
        assert_eq!(params, 1);
    }

    #[test]
    #[should_panic(expected = "as many values")]
    fn a_short_row_is_a_bug() {
        let mut rows = Rows::new(2);
        rows.push([Val::Int(1)]);
    }
}
