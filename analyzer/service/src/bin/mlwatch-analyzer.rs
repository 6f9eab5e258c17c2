//! The analyzer binary: `mlwatch-analyzer [--config FILE]`.

fn main() {
    mlwatch_common::cli::main("mlwatch-analyzer", mlwatch_analyzer::SECTIONS, mlwatch_analyzer::run)
}
