//! The collector binary: `mlwatch-collector [--config FILE]`.

fn main() {
    mlwatch_common::cli::main("mlwatch-collector", mlwatch_collector::SECTIONS, mlwatch_collector::run)
}
