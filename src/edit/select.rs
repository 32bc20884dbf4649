//! Neuron selection (spec §6.2): the neurons with the largest summed |key| that together cover
//! a fraction `p` of the total score.

/// The selection at one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// `s_j = Σ_requests |K[j, r]|`, summed in f32 in request order. `(d_ff)`.
    pub scores: Vec<f32>,
    /// Selected neuron indices in descending score order (the reference's order).
    pub selected: Vec<usize>,
}

/// Selects neurons for `keys (n, d_ff)` (request-major) with threshold `p`.
///
/// The code convention (spec §12.2): the *largest* prefix of the descending order whose inclusive
/// running sum is `≤ p · Σ s`, with the running sum and the total in f32 (hazard H4). `p ≥ 1`
/// selects every neuron, which is what the float32 rule means up to rounding. At least the top
/// neuron is always selected (where the reference would crash on an empty set).
pub fn select_neurons(keys: &[f32], d_ff: usize, p: f32) -> Selection {
    let mut scores = vec![0.0f32; d_ff];
    for key in keys.chunks(d_ff) {
        for (s, k) in scores.iter_mut().zip(key) {
            *s += k.abs();
        }
    }
    let mut order: Vec<usize> = (0..d_ff).collect();
    // Descending score; equal scores keep index order.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    if p >= 1.0 {
        return Selection {
            scores,
            selected: order,
        };
    }
    let total: f32 = scores.iter().sum();
    let limit = p * total;
    let mut running = 0.0f32;
    let mut count = 0;
    for &j in &order {
        running += scores[j];
        if running > limit {
            break;
        }
        count += 1;
    }
    order.truncate(count.max(1));
    Selection {
        scores,
        selected: order,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_worked_selection() {
        // Scores 4, 3, 2, 1 (total 10): p = 0.7 keeps 4 + 3 = 7 ≤ 7; p = 0.69 keeps only 4.
        let keys = [4.0, -3.0, 2.0, 1.0];
        assert_eq!(select_neurons(&keys, 4, 0.7).selected, [0, 1]);
        assert_eq!(select_neurons(&keys, 4, 0.69).selected, [0]);
        assert_eq!(select_neurons(&keys, 4, 1.0).selected, [0, 1, 2, 3]);
        // Two requests add their |keys|: scores 1+3, 2+0, 0+5.
        let sel = select_neurons(&[1.0, 2.0, 0.0, -3.0, 0.0, 5.0], 3, 0.5);
        assert_eq!(sel.scores, [4.0, 2.0, 5.0]);
        assert_eq!(sel.selected, [2]);
    }
}
