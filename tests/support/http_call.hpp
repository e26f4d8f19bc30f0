#pragma once

// One HTTP request to a daemon on loopback, on its own connection, with an
// admin token (Bearer) when one is given; the answer as text.

#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>

#include <sstream>
#include <string>

namespace sbtest {

struct Http {
    int status = 0;
    std::string body;
    std::string content_type;
    std::string cache_control;
};

inline Http http_call(int port, const std::string& method, const std::string& path, const std::string& token = "",
                      const std::string& body = "", int timeout_s = 20) {
    Poco::Net::HTTPClientSession session("127.0.0.1", static_cast<Poco::UInt16>(port));
    session.setTimeout(Poco::Timespan(timeout_s, 0));
    Poco::Net::HTTPRequest req(method, path, Poco::Net::HTTPMessage::HTTP_1_1);
    if (!token.empty()) req.set("Authorization", "Bearer " + token);
    if (!body.empty()) {
        req.setContentType("application/json");
        req.setContentLength(static_cast<std::streamsize>(body.size()));
    } else if (method != "GET") {
        req.setContentLength(0);
    }
    session.sendRequest(req) << body;
    Poco::Net::HTTPResponse resp;
    std::istream& in = session.receiveResponse(resp);
    std::ostringstream out;
    out << in.rdbuf();
    return {static_cast<int>(resp.getStatus()), out.str(), resp.getContentType(), resp.get("Cache-Control", "")};
}

} // namespace sbtest
