//! Compiles the Slint UI (ui/app.slint and the pages it imports).
//!
//! With debug info, Slint's testing backend can find elements (tests tap
//! buttons by their accessible labels); it costs a little binary size.
fn main() {
    let config = slint_build::CompilerConfiguration::new().with_debug_info(true);
    slint_build::compile_with_config("ui/app.slint", config).expect("the Slint UI compiles");
}
