// Embedded Tomcat 10 (Debian's libtomcat10-java) with servlets mapped to
// /account, /pay, /admin/* and the default servlet: Tomcat decodes the
// path, drops ;params from every segment and merges slashes before it
// maps. Prints `PORT n` once listening on 127.0.0.1; answers
// `handler=NAME path=PATH`. Used by tests/path_backends.rs.

import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.nio.file.Files;
import org.apache.catalina.Context;
import org.apache.catalina.connector.Connector;
import org.apache.catalina.startup.Tomcat;

public class PathServlets {
    static HttpServlet named(String name, String method) {
        return new HttpServlet() {
            @Override
            protected void service(HttpServletRequest q, HttpServletResponse r) throws IOException {
                String handler = method == null || method.equals(q.getMethod()) ? name : "other";
                String info = q.getPathInfo() == null ? "" : q.getPathInfo();
                r.setContentType("text/plain");
                r.getWriter().print("handler=" + handler + " path=" + q.getServletPath() + info);
            }
        };
    }

    static void map(Context ctx, String name, String method, String pattern) {
        Tomcat.addServlet(ctx, name, named(name, method));
        ctx.addServletMappingDecoded(pattern, name);
    }

    public static void main(String[] args) throws Exception {
        Tomcat tomcat = new Tomcat();
        tomcat.setBaseDir(Files.createTempDirectory("tollgate-tomcat").toString());
        Connector c = new Connector();
        c.setPort(0);
        c.setProperty("address", "127.0.0.1");
        tomcat.setConnector(c);
        Context ctx = tomcat.addContext("", null);
        map(ctx, "account", "GET", "/account");
        map(ctx, "pay", "POST", "/pay");
        map(ctx, "admin", "GET", "/admin/*");
        map(ctx, "other", null, "/");
        tomcat.start();
        System.out.println("PORT " + c.getLocalPort());
        System.out.flush();
        tomcat.getServer().await();
    }
}
