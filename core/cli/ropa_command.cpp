#include "cli/ropa_command.hpp"

#include "build_config.hpp"
#include "daemon.hpp"
#include "governance/ropa.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace switchboard::cli {

const char* const kRopaHelp =
    R"(Usage: switchboard ropa -c FILE [--plugin-dir DIR]... [--set KEY=VALUE]...
                       [--out DIR] [--format md|html|both] [--diff OLD.toml]

Writes the record of processing (UK GDPR Art. 30) of FILE: the source
systems with their channels, data categories and data subjects, the purposes
and lawful bases (routes), the recipients with the field paths and transforms
each receives (profiles), the retention periods, transfers outside the UK and
the security measures in force. FILE is validated exactly as `switchboard
check` does, and the plugins' descriptors are read, so the record says what
the node does. Writes DIR/ropa.md and DIR/ropa.html.

With --diff OLD.toml (the config running now), also writes
DIR/ropa-diff.md and DIR/ropa-diff.html: how FILE changes who receives what
(routes added, removed or changed, fields added or removed per recipient,
transforms, retention, transfers, security), and prints a one-line summary.
OLD.toml is validated the same way (--plugin-dir and --set apply to both).

Options:
  -c, --config FILE    the config file (required)
  --plugin-dir DIR     look for plugins in DIR instead of plugins.directories
                       (repeatable)
  --set KEY=VALUE      override one key of the file(s) (repeatable)
  --out DIR            where to write (default: the current directory;
                       created if missing; files there are replaced)
  --format FORMAT      md, html or both (default both)
  --diff OLD.toml      compare with this config
  -h, --help           this text

Exit codes: 0 written, 1 a file could not be written, 2 bad usage or an
invalid config (every error printed as by check).
)";

namespace {

struct RopaArgs {
    std::optional<std::filesystem::path> config, diff;
    std::vector<std::filesystem::path> plugin_dirs;
    std::vector<std::string> overrides;
    std::filesystem::path out = ".";
    std::string format = "both";
    bool help = false;
};

std::optional<RopaArgs> parse_ropa(int argc, char** argv) {
    RopaArgs a;
    for (int i = 2; i < argc; ++i) {
        std::string name = argv[i], inline_value;
        bool has_inline = false;
        if (name.rfind("--", 0) == 0 && name.find('=') != std::string::npos) {
            inline_value = name.substr(name.find('=') + 1);
            name = name.substr(0, name.find('='));
            has_inline = true;
        }
        if (name == "-h" || name == "--help") {
            a.help = true;
            continue;
        }
        if (name == "-c") name = "--config";
        static const char* const with_value[] = {"--config", "--plugin-dir", "--set", "--out", "--format", "--diff"};
        if (std::find(std::begin(with_value), std::end(with_value), name) == std::end(with_value)) {
            std::cerr << "switchboard ropa: " << (name.empty() || name[0] != '-' ? "unexpected argument '" : "unknown option '")
                      << argv[i] << "'; see switchboard ropa --help\n";
            return std::nullopt;
        }
        if (!has_inline && i + 1 >= argc) {
            std::cerr << "switchboard ropa: " << name << " needs a value\n";
            return std::nullopt;
        }
        std::string v = has_inline ? inline_value : argv[++i];
        if (name == "--config") a.config = v;
        else if (name == "--plugin-dir") a.plugin_dirs.emplace_back(v);
        else if (name == "--set") a.overrides.push_back(v);
        else if (name == "--out") a.out = v;
        else if (name == "--diff") a.diff = v;
        else if (name == "--format") {
            if (v != "md" && v != "html" && v != "both") {
                std::cerr << "switchboard ropa: --format must be md, html or both (found '" << v << "')\n";
                return std::nullopt;
            }
            a.format = v;
        }
    }
    return a;
}

// Validates like `check`; prints every problem as check does. Null when
// there is an error.
std::unique_ptr<Prepared> validated(const std::filesystem::path& file, const RopaArgs& a) {
    auto p = prepare({file, a.plugin_dirs, a.overrides});
    for (const auto& r : p->registry.refused()) std::cerr << r.str() << "\n";
    for (const auto& item : p->diagnostics.all()) std::cerr << item.str() << "\n";
    if (p->diagnostics.has_errors()) {
        std::cerr << file.string() << ": " << p->diagnostics.error_count() << " error(s)\n";
        return nullptr;
    }
    return p;
}

governance::Ropa ropa_of(const Prepared& p) {
    return governance::build_ropa(
        *p.config, *p.policy,
        [&](const std::string& name) -> const sb_plugin_descriptor* {
            auto found = p.registry.find(name);
            return found ? found->descriptor : nullptr;
        },
        std::string("switchboard ") + SWITCHBOARD_VERSION);
}

// Replaces `file` whole (a reader never sees half a record).
bool write_file(const std::filesystem::path& file, const std::string& text) {
    const auto tmp = std::filesystem::path(file.string() + ".tmp");
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out << text;
        out.flush();
        if (!out) {
            std::cerr << "switchboard ropa: cannot write " << tmp.string() << ": " << std::strerror(errno) << "\n";
            return false;
        }
    }
    std::error_code ec;
    std::filesystem::rename(tmp, file, ec);
    if (ec) {
        std::cerr << "switchboard ropa: cannot write " << file.string() << ": " << ec.message() << "\n";
        std::filesystem::remove(tmp, ec);
        return false;
    }
    std::cout << "wrote " << file.string() << "\n";
    return true;
}

} // namespace

int cmd_ropa(int argc, char** argv) {
    auto a = parse_ropa(argc, argv);
    if (!a) return 2;
    if (a->help) {
        std::cout << kRopaHelp;
        return 0;
    }
    if (!a->config) {
        std::cerr << "switchboard ropa: -c FILE is required; see switchboard ropa --help\n";
        return 2;
    }
    auto now = validated(*a->config, *a);
    if (!now) return 2;
    std::unique_ptr<Prepared> old;
    if (a->diff) {
        old = validated(*a->diff, *a);
        if (!old) return 2;
    }
    std::error_code ec;
    std::filesystem::create_directories(a->out, ec);
    if (ec) {
        std::cerr << "switchboard ropa: cannot create --out " << a->out.string() << ": " << ec.message() << "\n";
        return 1;
    }
    const bool md = a->format != "html", html = a->format != "md";
    const auto ropa = ropa_of(*now);
    if (md && !write_file(a->out / "ropa.md", governance::ropa_markdown(ropa))) return 1;
    if (html && !write_file(a->out / "ropa.html", governance::ropa_html(ropa))) return 1;
    if (old) {
        const auto diff = governance::diff_ropa(ropa_of(*old), ropa);
        if (md && !write_file(a->out / "ropa-diff.md", governance::diff_markdown(diff))) return 1;
        if (html && !write_file(a->out / "ropa-diff.html", governance::diff_html(diff))) return 1;
        std::cout << "changes from " << a->diff->string() << ": " << diff.summary() << "\n";
    }
    return 0;
}

} // namespace switchboard::cli
