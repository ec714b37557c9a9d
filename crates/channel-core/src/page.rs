//! Keyset pagination: every listing of the façade is newest first and resumable with the
//! [`PageToken`] of the page before, so that a page never repeats or skips a row because rows
//! were added meanwhile (as `OFFSET` would).

use std::fmt;

use crate::model::Timestamp;

/// The largest page.
pub const MAX_PAGE: usize = 500;
/// The page size when none is asked for.
pub const DEFAULT_PAGE: usize = 50;

/// Where in a listing a row stands: its sort time, then its id (the tie-break).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// The row's sort time (a message's `sent_at`, a conversation's `last_activity_at`).
    pub at: Timestamp,
    /// The row's id, as text.
    pub id: String,
}

/// An opaque token naming where the next page starts (after the last row of this one).
///
/// ```
/// use channel_core::page::PageToken;
/// let token: PageToken = "1700000000000.0190a1b2-0000-7000-8000-000000000000".parse().unwrap();
/// assert_eq!(token.to_string().parse::<PageToken>().unwrap(), token);
/// assert!("not a token".parse::<PageToken>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageToken(Position);

impl PageToken {
    /// The token that resumes after `position`.
    pub fn after(position: Position) -> Self {
        Self(position)
    }

    /// The position it resumes after.
    pub fn position(&self) -> &Position {
        &self.0
    }
}

impl fmt::Display for PageToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0.at.as_millis(), self.0.id)
    }
}

/// A page token that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a page token: pass the `next` token of the page before unchanged")]
pub struct InvalidPageToken(pub String);

impl std::str::FromStr for PageToken {
    type Err = InvalidPageToken;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidPageToken(s.chars().take(80).collect());
        let (at, id) = s.split_once('.').ok_or_else(bad)?;
        let at: i64 = at.parse().map_err(|_| bad())?;
        let valid_id = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid_id {
            return Err(bad());
        }
        Ok(Self(Position { at: Timestamp(at), id: id.to_owned() }))
    }
}

/// Which page of a listing: at most `limit` rows (1 to [`MAX_PAGE`]; 0 means
/// [`DEFAULT_PAGE`]), after `after` (the first page without it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// How many rows.
    pub limit: usize,
    /// Where to resume.
    pub after: Option<PageToken>,
}

impl PageRequest {
    /// The first page of `limit` rows.
    pub fn first(limit: usize) -> Self {
        Self { limit, after: None }
    }

    /// The page after `token`.
    pub fn after(limit: usize, token: PageToken) -> Self {
        Self { limit, after: Some(token) }
    }

    /// The page size asked for, within 1 and [`MAX_PAGE`].
    pub fn size(&self) -> usize {
        match self.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        }
    }
}

/// One page of a listing, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// The token of the next page; `None` on the last page.
    pub next: Option<PageToken>,
}

impl<T> Page<T> {
    /// A page from rows read one beyond the page size: the extra row only says that there is
    /// a next page, which starts after the last row kept.
    pub(crate) fn from_rows(
        mut rows: Vec<T>,
        size: usize,
        position: impl Fn(&T) -> Position,
    ) -> Self {
        let more = rows.len() > size;
        rows.truncate(size);
        let next = if more { rows.last().map(|r| PageToken::after(position(r))) } else { None };
        Self { items: rows, next }
    }
}
