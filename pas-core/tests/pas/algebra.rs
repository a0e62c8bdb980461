//! Laws of the intervention algebra and of its persistence (proptest).

use pas_core::{Error, Geometry, HeadId, Intervention, InterventionMeta, ModelIdentity, Positions, SteeredHead, Steering};
use proptest::prelude::*;

fn geometry() -> impl Strategy<Value = Geometry> {
    (1u32..5, 1u32..5, 1u32..9).prop_map(|(l, h, d)| Geometry::new(l, h, d))
}

/// A random intervention on `g`: distinct heads, unit directions, sigmas in (0, 5).
fn intervention(g: Geometry) -> impl Strategy<Value = Intervention> {
    let n = g.num_heads();
    (prop::sample::subsequence((0..n).collect::<Vec<_>>(), 0..=n), prop::collection::vec(prop::collection::vec(-1.0f32..1.0, g.head_dim as usize), n), prop::collection::vec(0.01f32..5.0, n))
        .prop_filter_map("non-zero directions", move |(idx, dirs, sigmas)| {
            let heads = idx
                .iter()
                .map(|&i| {
                    let norm = dirs[i].iter().map(|x| x * x).sum::<f32>().sqrt();
                    (norm > 1e-3).then(|| SteeredHead {
                        head: HeadId::new((i / g.heads as usize) as u32, (i % g.heads as usize) as u32),
                        direction: dirs[i].iter().map(|x| x / norm).collect(),
                        sigma: sigmas[i],
                    })
                })
                .collect::<Option<Vec<_>>>()?;
            Intervention::new(g, heads).ok()
        })
}

fn with_intervention() -> impl Strategy<Value = Intervention> {
    geometry().prop_flat_map(intervention)
}

fn meta() -> InterventionMeta {
    InterventionMeta { model_id: "toy".into(), config_hash: "abc".into(), method: "pas/mass-mean".into(), top_k: 24, seed: 42, sigma_ddof: 0, positions: Positions::Answer, alpha: Some(2.5) }
}

fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * (1.0 + x.abs().max(y.abs())))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn directions_are_unit_norm(iv in with_intervention(), k in -3.0f32..3.0) {
        for h in iv.heads().iter().chain(iv.scale(k).heads()) {
            let norm = h.direction.iter().map(|x| x * x).sum::<f32>().sqrt();
            prop_assert!((norm - 1.0).abs() < 1e-4, "{}", norm);
        }
    }

    #[test]
    fn a_steering_rebuilt_from_its_layers_is_equal(iv in with_intervention(), a in -8.0f32..8.0) {
        let s = iv.at(a, Positions::Last);
        let g = iv.geometry();
        let layers = (0..g.layers as usize).map(|l| s.layer(l).map(<[f32]>::to_vec)).collect();
        prop_assert_eq!(Steering::from_layers(g, Positions::Last, layers).expect("valid layers"), s);
    }

    #[test]
    fn alpha_zero_gives_an_all_zero_steering(iv in with_intervention()) {
        let s = iv.at(0.0, Positions::All);
        prop_assert!(s.is_zero());
        for l in 0..iv.geometry().layers as usize {
            prop_assert!(s.layer(l).is_none());
        }
    }

    #[test]
    fn steering_is_linear_in_alpha(iv in with_intervention(), a in -8.0f32..8.0, k in -3.0f32..3.0) {
        let s1 = iv.at(a, Positions::All);
        let sk = iv.at(k * a, Positions::All);
        let scaled = iv.scale(k).at(a, Positions::All);
        for l in 0..iv.geometry().layers as usize {
            match (s1.layer(l), sk.layer(l), scaled.layer(l)) {
                (Some(x), Some(y), Some(z)) => {
                    let kx: Vec<f32> = x.iter().map(|v| k * v).collect();
                    prop_assert!(close(&kx, y, 1e-4), "alpha linearity at layer {}", l);
                    prop_assert!(close(y, z, 1e-4), "scale(k) at alpha = alpha k at layer {}", l);
                }
                (x, y, _) => prop_assert!(x.is_none_or(|x| x.iter().all(|v| *v == 0.0)) || y.is_none()),
            }
        }
    }

    #[test]
    fn v_plus_minus_v_is_zero(iv in with_intervention()) {
        let zero = iv.add(&-&iv).unwrap();
        prop_assert!(zero.is_empty());
        prop_assert!(zero.at(3.0, Positions::All).is_zero());
        prop_assert_eq!(iv.add(&Intervention::empty(iv.geometry())).unwrap().len(), iv.len());
    }

    #[test]
    fn adding_adds_displacements(a in geometry().prop_flat_map(|g| (intervention(g), intervention(g)))) {
        let (x, y) = a;
        let sum = x.add(&y).unwrap().at(1.5, Positions::All);
        let (sx, sy) = (x.at(1.5, Positions::All), y.at(1.5, Positions::All));
        for l in 0..x.geometry().layers as usize {
            let w = x.geometry().layer_width();
            let get = |s: &pas_core::Steering| s.layer(l).map(<[f32]>::to_vec).unwrap_or_else(|| vec![0.0; w]);
            let expect: Vec<f32> = get(&sx).iter().zip(get(&sy)).map(|(p, q)| p + q).collect();
            prop_assert!(close(&get(&sum), &expect, 1e-4));
        }
        let merged = Intervention::merge(&[x.clone(), y.clone()]).unwrap().at(3.0, Positions::All);
        for l in 0..x.geometry().layers as usize {
            let w = x.geometry().layer_width();
            let get = |s: &pas_core::Steering| s.layer(l).map(<[f32]>::to_vec).unwrap_or_else(|| vec![0.0; w]);
            prop_assert!(close(&get(&merged), &get(&sum), 1e-4), "merge = mean");
        }
    }

    #[test]
    fn save_and_load_round_trip_exactly(iv in with_intervention()) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("iv.safetensors");
        iv.save(&p, &meta()).unwrap();
        let (back, m) = Intervention::load(&p).unwrap();
        prop_assert_eq!(&back, &iv);
        prop_assert_eq!(m, meta());
        let id = ModelIdentity { model_id: "toy".into(), config_hash: "abc".into(), geometry: iv.geometry() };
        prop_assert_eq!(Intervention::load_for(&p, &id).unwrap().0, iv);
    }

    #[test]
    fn loading_against_another_geometry_fails(iv in with_intervention()) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("iv.safetensors");
        iv.save(&p, &meta()).unwrap();
        let g = iv.geometry();
        let other = ModelIdentity { model_id: "toy".into(), config_hash: "abc".into(), geometry: Geometry::new(g.layers, g.heads, g.head_dim + 1) };
        let is_geometry_mismatch = matches!(Intervention::load_for(&p, &other), Err(Error::GeometryMismatch { .. }));
        prop_assert!(is_geometry_mismatch);
        let other_model = ModelIdentity { model_id: "other".into(), ..other };
        let other_model = ModelIdentity { geometry: g, ..other_model };
        let is_model_mismatch = matches!(Intervention::load_for(&p, &other_model), Err(Error::ModelMismatch { .. }));
        prop_assert!(is_model_mismatch);
    }
}

#[test]
fn top_keeps_the_first_heads_and_combination_checks_geometry() {
    let g = Geometry::new(2, 2, 2);
    let h = |l, i| SteeredHead { head: HeadId::new(l, i), direction: vec![1.0, 0.0], sigma: 1.0 };
    let iv = Intervention::new(g, vec![h(1, 1), h(0, 0), h(1, 0)]).unwrap();
    let top: Vec<HeadId> = iv.top(2).heads().iter().map(|s| s.head).collect();
    assert_eq!(top, vec![HeadId::new(1, 1), HeadId::new(0, 0)]);
    let other = Intervention::empty(Geometry::new(2, 2, 3));
    assert!(matches!(iv.add(&other), Err(Error::GeometryMismatch { .. })));
    assert!(Intervention::merge(&[]).is_err());
    assert!(Intervention::new(g, vec![h(0, 0), h(0, 0)]).is_err(), "repeated head");
    assert!(Intervention::new(g, vec![h(2, 0)]).is_err(), "layer out of range");
    assert!(Intervention::new(g, vec![SteeredHead { direction: vec![2.0, 0.0], ..h(0, 0) }]).is_err(), "not unit");
    assert!(Intervention::new(g, vec![SteeredHead { sigma: f32::NAN, ..h(0, 0) }]).is_err());
}

#[test]
fn a_corrupt_file_is_a_format_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.safetensors");
    std::fs::write(&p, b"not a safetensors file").unwrap();
    assert!(matches!(Intervention::load(&p), Err(Error::Format { .. })));
}

#[test]
fn steering_from_layers_refuses_a_wrong_shape() {
    let g = Geometry::new(2, 2, 3);
    assert!(matches!(Steering::from_layers(g, Positions::All, vec![None]), Err(Error::Shape { found: 1, .. })));
    assert!(matches!(Steering::from_layers(g, Positions::All, vec![None, Some(vec![0.0; 5])]), Err(Error::Shape { expected: 6, .. })));
    assert!(Steering::from_layers(g, Positions::All, vec![Some(vec![f32::NAN; 6]), None]).is_err());
}

#[test]
fn steered_positions_parse_their_own_spelling() {
    for p in [Positions::All, Positions::Last, Positions::Answer] {
        assert_eq!(p.as_str().parse::<Positions>(), Ok(p));
        assert_eq!(serde_json::to_value(p).unwrap(), serde_json::json!(p.as_str()));
    }
    assert!(Positions::Answer.every_token() && Positions::All.every_token() && !Positions::Last.every_token());
    assert!("first".parse::<Positions>().unwrap_err().contains("all, answer or last"));
}
