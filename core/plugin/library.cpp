#include "plugin/library.hpp"

#include "config/schema.hpp"
#include "util/sha256.hpp"
#include "util/text.hpp"

#include <boost/dll/shared_library.hpp>

#include <cstddef>

namespace switchboard::plugin {

std::size_t descriptor_size_for_minor(unsigned minor) {
    // One entry per published minor of ABI major 1. Append, never change.
    static const std::size_t sizes[] = {sizeof(sb_plugin_descriptor)};
    constexpr unsigned known = sizeof(sizes) / sizeof(sizes[0]);
    static_assert(known == SB_ABI_MINOR + 1, "add the new minor's descriptor size");
    return minor < known ? sizes[minor] : sizeof(sb_plugin_descriptor);
}

std::string check_descriptor(const sb_plugin_descriptor* d) {
    if (!d) return "entry point returned no descriptor";
    // Only struct_size and the version fields are read before the version is
    // known to be ours.
    constexpr std::size_t header = offsetof(sb_plugin_descriptor, abi_minor) + sizeof(uint16_t);
    if (d->struct_size < header)
        return "descriptor is " + std::to_string(d->struct_size) + " bytes, too small to hold a version";
    if (d->abi_major != SB_ABI_MAJOR)
        return "expected plugin ABI major " + std::to_string(SB_ABI_MAJOR) + ", found " +
               std::to_string(d->abi_major) + " (rebuild the plugin against this SDK)";
    if (d->abi_minor > SB_ABI_MINOR)
        return "expected plugin ABI minor " + std::to_string(SB_ABI_MINOR) + " or older, found " +
               std::to_string(d->abi_minor) + " (the plugin needs a newer Switchboard)";
    std::size_t want = descriptor_size_for_minor(d->abi_minor);
    if (d->struct_size < want)
        return "expected a descriptor of at least " + std::to_string(want) + " bytes for ABI " +
               std::to_string(d->abi_major) + "." + std::to_string(d->abi_minor) + ", found " +
               std::to_string(d->struct_size) + " bytes";
    if (!d->name || !text::is_identifier(d->name))
        return "expected a plugin name of lowercase letters, digits, '-' and '_', found " +
               std::string(d->name ? "\"" + std::string(d->name).substr(0, 64) + "\"" : "none");
    if (!d->version || !*d->version) return "expected a version string, found none";
    if (d->kind != SB_KIND_SOURCE && d->kind != SB_KIND_DESTINATION && d->kind != SB_KIND_TRANSFORM)
        return "expected kind source, destination or transform, found " + std::to_string(d->kind);
    if (!d->create || !d->destroy) return "expected create and destroy functions, found none";
    if (d->kind == SB_KIND_DESTINATION && !d->deliver)
        return "destination plugin has no deliver function";
    if (d->kind == SB_KIND_TRANSFORM && !d->transform)
        return "transform plugin has no transform function";
    if ((d->capabilities & SB_CAP_ERASE) && !d->erase)
        return "declares the erase capability but has no erase function";
    if (d->n_config_fields && !d->config_fields) return "declares config fields but no table";
    for (std::size_t i = 0; i < d->n_config_fields; ++i)
        if (d->config_fields[i].struct_size < sizeof(sb_config_field))
            return "config field " + std::to_string(i) + " is smaller than sb_config_field";
    std::vector<std::string> problems;
    config::spec_from_plugin(d->config_fields, d->n_config_fields, problems);
    if (!problems.empty()) return "config schema: " + problems.front();
    return {};
}

std::shared_ptr<const LoadedPlugin> load_plugin(const std::filesystem::path& file,
                                                const LoadOptions& options, Refusal& refusal) {
    refusal.file = file;
    auto plugin = std::make_shared<LoadedPlugin>();
    plugin->file = file;

    std::string name = file.filename().string();
    auto pin = options.pins.find(name);
    if (pin != options.pins.end()) {
        std::string error;
        auto actual = sha256_file(file, error);
        if (!actual) {
            refusal.reason = "cannot hash file: " + error;
            return nullptr;
        }
        if (*actual != pin->second) {
            refusal.reason = "expected sha256 " + pin->second + ", found " + *actual;
            return nullptr;
        }
        plugin->sha256 = *actual;
    } else if (options.require_pins) {
        refusal.reason = "expected a sha256 pin (plugins.require_pins is set), found none";
        return nullptr;
    }

    auto lib = std::make_shared<boost::dll::shared_library>();
    boost::dll::fs::error_code ec;
    lib->load(boost::dll::fs::path(file.string()),
              boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local, ec);
    if (ec || !lib->is_loaded()) {
        refusal.reason = "cannot load library: " + ec.message();
        return nullptr;
    }
    if (!lib->has(SB_ENTRY_POINT)) {
        refusal.reason = std::string("expected entry point ") + SB_ENTRY_POINT +
                         ", found none (not a Switchboard plugin)";
        return nullptr;
    }
    auto entry = lib->get<const sb_plugin_descriptor*()>(SB_ENTRY_POINT);
    const sb_plugin_descriptor* d = entry();
    std::string problem = check_descriptor(d);
    if (!problem.empty()) {
        refusal.reason = problem;
        return nullptr;
    }
    plugin->library = std::move(lib);
    plugin->descriptor = d;
    return plugin;
}

} // namespace switchboard::plugin
