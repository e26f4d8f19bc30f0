#pragma once

// What a memory-sink wrote to its `output` file: one delivered record per
// line, as its leaves by path below "record." ("fields.citizen.name",
// "attachments[0].uri", "meta.channel"), values as text.

#include <switchboard/detail/json_record.hpp>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace sbtest {

using Leaves = std::map<std::string, std::string>;

inline std::vector<Leaves> sink_records(const std::filesystem::path& file) {
    std::vector<Leaves> out;
    std::ifstream in(file);
    for (std::string line; std::getline(in, line);) {
        if (line.empty()) continue;
        Leaves leaves;
        sb::detail::JsonError err;
        bool ok = sb::detail::json_leaves(
            line,
            [&](std::string_view path, const sb_value& v) {
                if (path.substr(0, 7) != "record.") return true;
                std::string text;
                if (v.type == SB_VALUE_STRING)
                    text.assign(v.str, v.len);
                else if (v.type == SB_VALUE_BOOL)
                    text = v.i ? "true" : "false";
                else if (v.type == SB_VALUE_INT)
                    text = std::to_string(v.i);
                leaves.emplace(std::string(path.substr(7)), text);
                return true;
            },
            err);
        REQUIRE(ok);
        out.push_back(std::move(leaves));
    }
    return out;
}

} // namespace sbtest
