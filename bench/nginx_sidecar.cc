#include "nginx_sidecar.h"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace mrpc::bench {

bool nginx_installed() {
  return ::access(kNginxPath, X_OK) == 0;
}

Expected<Subprocess> start_nginx_grpc_proxy(const std::string& directory, const std::string& listen,
                                            const std::string& upstream,
                                            const std::vector<std::string>& prefix) {
  const std::string conf = directory + "/nginx.conf";
  FILE* file = std::fopen(conf.c_str(), "w");
  if (file == nullptr) return Status(StatusCode::kInternal, "cannot write " + conf);
  // client_max_body_size 0: no limit on a request's size (1 MiB messages; the default is 1m).
  fmt::print(file,
             "daemon off; master_process off; worker_processes 1; pid {0}/nginx.pid;\n"
             "error_log {0}/error.log error;\n"
             "events {{ worker_connections 1024; }}\n"
             "http {{ access_log off; client_body_temp_path {0}; proxy_temp_path {0};\n"
             "  fastcgi_temp_path {0}; uwsgi_temp_path {0}; scgi_temp_path {0};\n"
             "  client_max_body_size 0;\n"
             "  upstream b {{ server {2}; keepalive 128; keepalive_requests 1000000; }}\n"
             "  server {{ listen {1} http2; keepalive_requests 1000000;\n"
             "    location / {{ grpc_pass grpc://b; }} }} }}\n",
             directory, listen, upstream);
  std::fclose(file);
  std::vector<std::string> argv = prefix;
  argv.insert(argv.end(), {kNginxPath, "-p", directory, "-c", conf});
  return Subprocess::start(argv, {}, directory + "/nginx.out");
}

}  // namespace mrpc::bench
