#include "pipeline/explain.hpp"

#include <algorithm>

namespace switchboard::pipeline {

namespace {

using Row = std::vector<std::string>;

// Rows as columns two spaces apart, each line indented; the last column is
// not padded, so no line ends in spaces.
void table(std::string& out, const std::vector<Row>& rows, std::string_view indent) {
    std::vector<std::size_t> width;
    for (const Row& r : rows)
        for (std::size_t c = 0; c < r.size(); ++c) {
            if (width.size() <= c) width.resize(c + 1, 0);
            width[c] = std::max(width[c], r[c].size());
        }
    for (const Row& r : rows) {
        out += indent;
        for (std::size_t c = 0; c < r.size(); ++c) {
            out += r[c];
            if (c + 1 < r.size()) out.append(width[c] - r[c].size() + 2, ' ');
        }
        out += '\n';
    }
}

std::string meta_or_dash(const sb_record& record, const char* key) {
    const char* v = record.data.meta(key);
    return v && *v ? v : "-";
}

// Why no route sends this record to `destination`: the first filter that
// every route to it fails.
std::string why_nothing(const Router& router, const std::string& destination, std::string_view category,
                        std::string_view channel, std::string_view source) {
    std::vector<const Route*> to;
    for (const Route& r : router.all())
        if (r.destination == destination) to.push_back(&r);
    if (to.empty()) return "no route sends to it";
    std::string what = "no route for category " + std::string(category);
    auto any = [&](auto pred) { return std::any_of(to.begin(), to.end(), pred); };
    if (!any([&](const Route* r) { return r->takes_category(category); })) {
        if (category == kUnclassified && any([](const Route* r) {
                return std::find(r->categories.begin(), r->categories.end(), "*") != r->categories.end();
            }))
            what += " (\"*\" never takes unclassified records)";
        return what;
    }
    if (!any([&](const Route* r) {
            return r->takes_category(category) &&
                   (r->channels.empty() || std::find(r->channels.begin(), r->channels.end(), channel) != r->channels.end());
        }))
        return what + (channel.empty() ? " without a channel" : " on channel " + std::string(channel));
    return what + (source.empty() ? " without a source" : " from source " + std::string(source));
}

} // namespace

std::string explain(const Policy& policy, const sb_record& record, std::int64_t now_ms,
                    const std::vector<std::string>& all_destinations) {
    Policy::Decision decision = policy.decide(record);
    const std::string& category = decision.classified.category;
    const char* channel = record.data.meta("channel");
    const char* source = record.data.meta("source");

    std::string out;
    std::vector<Row> head = {{"record", meta_or_dash(record, "id")},
                             {"source", meta_or_dash(record, "source")},
                             {"channel", meta_or_dash(record, "channel")}};
    if (decision.classified.rule < 0)
        head.push_back({"category", std::string(kUnclassified) + ": no rule matched"});
    else
        head.push_back({"category", category + ", by " + policy.classifier().describe_rule(decision.classified.rule)});
    table(out, head, "");

    out += "\nroutes taken: " + std::to_string(decision.routes.size()) + "\n";
    if (!decision.routes.empty()) {
        std::vector<Row> rows = {{"ROUTE", "DESTINATION", "PURPOSE", "PROFILE", "LAWFUL BASIS"}};
        for (const Route* r : decision.routes)
            rows.push_back({r->label, r->destination, r->purpose,
                            r->profile ? r->profile->name() + "@" + std::to_string(r->profile->version())
                                       : r->profile_name + " (unknown)",
                            r->has_lawful_basis() ? r->lawful_basis : "-"});
        table(out, rows, "  ");
    }

    // The record as the pipeline holds it when minimising: with its category.
    sb_record classified;
    classified.data = record.data;
    classified.data.set_meta("category", category);
    std::vector<FieldDecision> decisions;
    for (const Route* r : decision.routes) {
        out += "\nto " + r->destination + " by route " + r->label;
        if (r->profile) out += " (profile " + r->profile->name() + "@" + std::to_string(r->profile->version()) + ")";
        out += "\n";
        if (!r->profile) {
            out += "  nothing: profile " + r->profile_name + " is not configured\n";
            continue;
        }
        sb_record minimised;
        std::string summary;
        r->profile->apply(classified, minimised, r->has_lawful_basis(), now_ms, &decisions, &summary);
        table(out, {{"payload", minimised.data.json()}, {"sent", summary.empty() ? "-" : summary}}, "  ");
        if (decisions.empty()) {
            out += "  (the record has no fields)\n";
            continue;
        }
        std::vector<Row> rows = {{"FIELD", "CATEGORY", "ACTION", "WHY"}};
        for (const FieldDecision& d : decisions) rows.push_back({d.path, d.category, action_name(d.action), d.reason});
        table(out, rows, "  ");
    }

    std::vector<Row> nothing;
    for (const std::string& d : all_destinations) {
        bool receives = std::any_of(decision.routes.begin(), decision.routes.end(),
                                    [&](const Route* r) { return r->destination == d; });
        if (!receives)
            nothing.push_back({d, why_nothing(policy.router(), d, category, channel ? channel : "", source ? source : "")});
    }
    if (!nothing.empty()) {
        out += "\nreceive nothing: " + std::to_string(nothing.size()) + "\n";
        table(out, nothing, "  ");
    }
    return out;
}

} // namespace switchboard::pipeline
