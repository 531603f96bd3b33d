//! Order statistics of samples.

/// Nearest-rank `p`-th percentile (0 < p <= 100) of `sorted` (ascending): the
/// `ceil(p/100 * n)`-th smallest value; `None` for no samples.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The finite values of `values`, sorted ascending.
pub fn finite_sorted(values: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(percentile(&v, 50.0), Some(5));
        assert_eq!(percentile(&v, 95.0), Some(10));
        assert_eq!(percentile(&v, 1.0), Some(1));
        assert_eq!(percentile::<u64>(&[], 50.0), None);
    }

    #[test]
    fn finite_only() {
        assert_eq!(
            finite_sorted([3.0, f64::NAN, 1.0, f64::INFINITY]),
            vec![1.0, 3.0]
        );
    }
}
