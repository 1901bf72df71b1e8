//! Keyset pagination, shared by the listing tasks (`list-events`, `list-users`): `--after ID`
//! (the `next` of the previous page) and `--limit N`. A page is the rows with an id above the
//! cursor, in id order, so that every page costs the same wherever it starts.

use commondb::{Error, Result};

/// The most rows one page holds.
pub const MAX_LIMIT: u32 = 1000;

/// A checked cursor and page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The rows after this id.
    pub after: i64,
    /// At most this many.
    pub limit: u32,
}

impl Bounds {
    /// Checks `--after` (an id, 0 or more) and `--limit` (1 to [`MAX_LIMIT`]).
    pub fn new(after: Option<i64>, limit: u32) -> Result<Bounds> {
        Bounds::up_to(after, limit, MAX_LIMIT)
    }

    /// Checks `--after` and `--limit` (1 to `max`: a task that streams its rows may allow
    /// more than a page it holds).
    pub fn up_to(after: Option<i64>, limit: u32, max: u32) -> Result<Bounds> {
        if !(1..=max).contains(&limit) {
            return Err(Error::invalid_input(format!(
                "--limit {limit} is out of range: 1 to {max}"
            ))
            .hint("page through more with --after, the next cursor each page ends with"));
        }
        let after = after.unwrap_or(0);
        if after < 0 {
            return Err(Error::invalid_input(format!(
                "--after {after} is not a cursor: ids start at 1"
            )));
        }
        Ok(Bounds { after, limit })
    }

    /// How many rows to fetch: one more than the page, to know whether another follows.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// The page out of `rows` (fetched with [`Bounds::fetch`]) and the next page's cursor, if
    /// there is a next page.
    pub fn page<T>(&self, rows: Vec<T>, id: impl Fn(&T) -> i64) -> (Vec<T>, Option<i64>) {
        let mut cut = self.cut();
        let rows = rows.into_iter().filter(|row| cut.admit(id(row))).collect();
        (rows, cut.next())
    }

    /// The same cut, a row at a time, for rows streamed as they are read.
    pub fn cut(&self) -> Cut {
        Cut {
            limit: u64::from(self.limit),
            seen: 0,
            last: None,
            more: false,
        }
    }
}

/// Which of the rows fetched with [`Bounds::fetch`] belong to the page: all but the one past
/// it, which only says that a next page exists.
#[derive(Debug)]
pub struct Cut {
    limit: u64,
    seen: u64,
    last: Option<i64>,
    more: bool,
}

impl Cut {
    /// Whether the row with id `id`, the next one read, is on the page.
    pub fn admit(&mut self, id: i64) -> bool {
        self.seen += 1;
        if self.seen > self.limit {
            self.more = true;
            return false;
        }
        self.last = Some(id);
        true
    }

    /// The next page's cursor, if rows were left past this page.
    pub fn next(&self) -> Option<i64> {
        self.last.filter(|_| self.more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commondb::ErrorKind;

    #[test]
    fn bounds_are_checked_and_pages_cut() {
        let b = Bounds::new(None, 2).unwrap();
        assert_eq!((b.after, b.fetch()), (0, 3));
        assert_eq!(b.page(vec![1, 2, 3], |r| *r), (vec![1, 2], Some(2)));
        assert_eq!(b.page(vec![1, 2], |r| *r), (vec![1, 2], None));
        for (after, limit) in [(None, 0), (None, MAX_LIMIT + 1), (Some(-1), 10)] {
            let e = Bounds::new(after, limit).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
    }
}
