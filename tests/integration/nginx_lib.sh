# nginx as a plain static file server for the pull tests (sourced, not run).
# write_nginx_conf DIR ROOT PORT: DIR/nginx.conf serving ROOT on 127.0.0.1:PORT, every temp and log path in DIR.
# Run it with: nginx -c DIR/nginx.conf -e DIR/error.log (stop it with TERM, which stops its worker too).
write_nginx_conf() {
  mkdir -p "$1"
  cat > "$1/nginx.conf" <<CONF
daemon off;
worker_processes 1;
error_log $1/error.log;
pid $1/nginx.pid;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $1; proxy_temp_path $1; fastcgi_temp_path $1;
  uwsgi_temp_path $1; scgi_temp_path $1;
  sendfile on;
  server { listen 127.0.0.1:$3; root $2; }
}
CONF
}
