namespace KvmStorage.Core.Hosting;

/// <summary>Error ids of choosing the host a command works on: the session's connections and the offline root.</summary>
public static class ConnectionErrorIds
{
    /// <summary>No connection with that URI is open in the session.</summary>
    public const string ConnectionNotFound = "ConnectionNotFound";

    /// <summary>A cmdlet that works on one host was given several connections.</summary>
    public const string MultipleConnections = "MultipleConnectionsNotSupported";

    /// <summary>A write was attempted offline while libvirtd runs on the same root.</summary>
    public const string DaemonRunning = "LibvirtDaemonRunning";
}
