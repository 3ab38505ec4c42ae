//! budget.rs: the bytes one answer may take while it is built: every row and value read is
//! charged (its text plus a fixed overhead), and building stops with a 400 asking for a
//! narrower query once the budget is spent, so no query can make the daemon hold more than a
//! bounded amount of memory for it, whatever the database holds.
use super::db::QueryError;
use rusqlite::types::Value;

/// Bytes one API answer may take as it is built.
pub const ANSWER_BYTES: usize = 32 * 1024 * 1024;
/// What a row costs besides its values (its map), and a value besides its text.
const ROW_OVERHEAD: usize = 64;
const VALUE_OVERHEAD: usize = 16;

/// What is left of an answer's budget.
#[derive(Debug, Clone)]
pub struct Budget {
    max: usize,
    spent: usize,
}

impl Budget {
    pub fn new(max: usize) -> Budget {
        Budget { max, spent: 0 }
    }

    /// The API's budget, `ANSWER_BYTES`.
    pub fn answer() -> Budget {
        Budget::new(ANSWER_BYTES)
    }

    /// No bound (the command line, which builds answers in its own memory).
    pub fn unlimited() -> Budget {
        Budget::new(usize::MAX)
    }

    /// Charges a row of `values`.
    pub fn row(&mut self, values: &[Value]) -> Result<(), QueryError> {
        let bytes = values.iter().map(cost).sum::<usize>() + ROW_OVERHEAD;
        self.charge(bytes)
    }

    /// Charges one value.
    pub fn value(&mut self, v: &Value) -> Result<(), QueryError> {
        self.charge(cost(v))
    }

    fn charge(&mut self, bytes: usize) -> Result<(), QueryError> {
        self.spent = self.spent.saturating_add(bytes);
        if self.spent > self.max {
            return Err(QueryError::TooLarge(format!(
                "the answer would be larger than {} MiB; narrow the query (a shorter range, \
                 fewer dimensions, filters or a lower limit)",
                self.max / (1024 * 1024)
            )));
        }
        Ok(())
    }
}

fn cost(v: &Value) -> usize {
    VALUE_OVERHEAD
        + match v {
            Value::Text(s) => s.len(),
            // Hex in the answer.
            Value::Blob(b) => 2 * b.len(),
            _ => 0,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spent_past_the_budget_is_refused() {
        let mut b = Budget::new(1024 * 1024);
        let big = Value::Text("x".repeat(400 * 1024));
        b.row(&[big.clone(), Value::Integer(1)]).unwrap();
        b.value(&big).unwrap();
        let e = b.row(&[big]).unwrap_err().to_string();
        assert_eq!(
            e,
            "the answer would be larger than 1 MiB; narrow the query (a shorter range, fewer \
             dimensions, filters or a lower limit)"
        );
        Budget::unlimited()
            .row(&[Value::Text("x".repeat(1000))])
            .unwrap();
    }
}
