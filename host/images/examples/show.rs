//! `cargo run --example show -- PATH [--json]`: the same output as
//! `revenant show`, without building the host.
fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or_else(|| anyhow::anyhow!("usage: show PATH [--json]"))?;
    let json = args.next().as_deref() == Some("--json");
    print!("{}", revenant_images::show(std::path::Path::new(&path), json)?);
    Ok(())
}
