//! Ordering a pool of endpoints by how loaded they are (the router's `least_used` step).
//!
//! Input per endpoint: its load from the rate counters (`RateLimiter::load`: utilisation against
//! its configured limits, or -1 when it has none, and the requests in the window), optionally a
//! floor (the fraction of its quota the provider itself says is used), its weight and its
//! requests in flight. Utilisation is raised to the floor, then divided by the weight; when any endpoint has no
//! known limit, those get their weighted share of the pool's recent requests instead (window +
//! in flight, over all endpoints) so they still spread. The pool is rotated by `shift` before a
//! stable sort, so equal loads take turns instead of always picking the first endpoint.

/// `(order, utilisations in that order)`: `order[k]` is the index (into the inputs) of the
/// endpoint to try k-th. `floors`, `weights` and `in_flight` have one entry per load or are
/// empty (no floor is negative; missing weights are 1, 0 counts as 1; missing in-flight is 0);
/// `shift` is taken modulo the pool size.
pub fn rank(
    loads: &[(f64, u64)],
    floors: &[f64],
    weights: &[u64],
    in_flight: &[u64],
    shift: usize,
) -> (Vec<usize>, Vec<f64>) {
    let n = loads.len();
    let weight = |i: usize| weights.get(i).copied().unwrap_or(1).max(1) as f64;
    let mut utils: Vec<f64> = loads
        .iter()
        .enumerate()
        .map(|(i, &(u, _))| {
            let u = u.max(floors.get(i).copied().unwrap_or(-1.0));
            if u >= 0.0 {
                u / weight(i)
            } else {
                u
            }
        })
        .collect();
    if utils.iter().any(|&u| u < 0.0) {
        let counts: Vec<f64> = loads
            .iter()
            .enumerate()
            .map(|(i, &(_, requests))| {
                let busy = requests.saturating_add(in_flight.get(i).copied().unwrap_or(0));
                busy as f64 / weight(i)
            })
            .collect();
        // Left to right, as the Python router summed (the ranking must not depend on where it runs).
        let total = counts.iter().fold(0.0, |a, &c| a + c);
        let total = if total == 0.0 { 1.0 } else { total };
        for (u, c) in utils.iter_mut().zip(&counts) {
            if *u < 0.0 {
                *u = c / total;
            }
        }
    }
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    let shift = shift % n;
    let mut order: Vec<usize> = (shift..n).chain(0..shift).collect();
    // Stable: equal utilisations keep their rotated order.
    order.sort_by(|&a, &b| utils[a].total_cmp(&utils[b]));
    let ranked = order.iter().map(|&i| utils[i]).collect();
    (order, ranked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_utilised_first_and_ties_rotate() {
        let loads = [(0.5, 5), (0.1, 1), (0.3, 3)];
        assert_eq!(
            rank(&loads, &[], &[1, 1, 1], &[0, 0, 0], 0).0,
            vec![1, 2, 0]
        );
        let even = [(0.0, 0), (0.0, 0), (0.0, 0)];
        assert_eq!(rank(&even, &[], &[], &[], 0).0, vec![0, 1, 2]);
        assert_eq!(rank(&even, &[], &[], &[], 1).0, vec![1, 2, 0]);
        assert_eq!(rank(&even, &[], &[], &[], 5).0, vec![2, 0, 1]);
    }

    #[test]
    fn weights_divide_utilisation() {
        let loads = [(0.6, 6), (0.3, 3)];
        let (order, utils) = rank(&loads, &[], &[3, 1], &[0, 0], 0);
        assert_eq!(order, vec![0, 1]);
        assert_eq!(utils, vec![0.6 / 3.0, 0.3]);
    }

    #[test]
    fn unlimited_endpoints_share_recent_requests() {
        // Endpoint 0 has a limit (40% used); 1 and 2 have none: their share of the 10 requests
        // (window + in flight) of the pool is their utilisation.
        let loads = [(0.4, 2), (-1.0, 5), (-1.0, 1)];
        let (order, utils) = rank(&loads, &[], &[1, 1, 1], &[0, 0, 2], 0);
        assert_eq!(order, vec![2, 0, 1]);
        assert_eq!(utils, vec![0.3, 0.4, 0.5]);
        // An idle unlimited pool: all zero, plain rotation.
        let idle = [(-1.0, 0), (-1.0, 0)];
        assert_eq!(rank(&idle, &[], &[], &[], 1), (vec![1, 0], vec![0.0, 0.0]));
        assert_eq!(rank(&[], &[], &[], &[], 3), (vec![], vec![]));
    }

    #[test]
    fn floors_raise_utilisation_before_weighting() {
        // The provider says endpoint 0 is 90% used (our counters: 10%); endpoint 1 has no limit
        // of ours but a provider statement of 20%, so it is limited too.
        let loads = [(0.1, 1), (-1.0, 9)];
        let (order, utils) = rank(&loads, &[0.9, 0.2], &[2, 1], &[], 0);
        assert_eq!(order, vec![1, 0]);
        assert_eq!(utils, vec![0.2, 0.45]);
        // No statement (-1) leaves the load as it is.
        assert_eq!(rank(&loads, &[-1.0, -1.0], &[], &[], 0).1, vec![0.1, 0.9]);
    }
}
