using System.Globalization;
using System.Net.Sockets;
using KvmStorage.Core.Backends;
using KvmStorage.Core.Backends.Live;
using KvmStorage.Core.Libvirt;

namespace KvmStorage.Core.Hosting;

/// <summary>An open connection to a libvirt daemon, as Connect-LibvirtHost emits it.</summary>
public sealed class KvmConnection : IDisposable
{
    private KvmConnection(LiveHost host, string hostname, Version libvirtVersion, Version? hypervisorVersion)
    {
        Host = host;
        Hostname = hostname;
        LibvirtVersion = libvirtVersion;
        HypervisorVersion = hypervisorVersion;
    }

    /// <summary>The URI libvirt reports for the connection.</summary>
    public string Uri => Host.Name;

    /// <summary>The name of the machine the daemon runs on.</summary>
    public string Hostname { get; }

    /// <summary>The daemon's libvirt version.</summary>
    public Version LibvirtVersion { get; }

    /// <summary>The hypervisor's version; null when the driver cannot tell (e.g. no emulator installed).</summary>
    public Version? HypervisorVersion { get; }

    public bool ReadOnly => Host.Connection.ReadOnly;

    /// <summary>True until Disconnect-LibvirtHost closes it.</summary>
    public bool IsOpen => !Host.Connection.IsClosed;

    /// <summary>The backend that cmdlets use through this connection.</summary>
    public LiveHost Host { get; }

    /// <summary>Opens a connection; a user name and password answer libvirt's credential requests when given.</summary>
    public static KvmConnection Open(string? uri, bool readOnly = false, string? userName = null, string? password = null)
    {
        var host = new LiveHost(LibvirtConnection.Open(uri, readOnly, userName, password));
        try
        {
            ulong hypervisor = host.Connection.GetHypervisorVersion();
            return new KvmConnection(host, host.Connection.GetHostname(), ToVersion(host.Connection.GetLibraryVersion()), hypervisor == 0 ? null : ToVersion(hypervisor));
        }
        catch
        {
            host.Dispose();
            throw;
        }
    }

    /// <summary>libvirt's encoding: major × 1,000,000 + minor × 1,000 + release.</summary>
    public static Version ToVersion(ulong encoded) =>
        new((int)(encoded / 1_000_000), (int)(encoded / 1_000 % 1_000), (int)(encoded % 1_000));

    /// <summary>
    /// True when a libvirt daemon answers on the socket of this root (<c>&lt;root&gt;/run/libvirt/libvirt-sock</c>):
    /// its files are then the daemon's. libvirtd reads its XML files only when it starts and rewrites them from memory
    /// on every change, so an edit made beside it is ignored, then lost.
    /// </summary>
    public static bool DaemonAnswers(HostPaths paths)
    {
        ArgumentNullException.ThrowIfNull(paths);
        string socketPath = paths.Resolve("/run/libvirt/libvirt-sock");
        if (!File.Exists(socketPath))
        {
            return false;
        }

        try
        {
            using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            socket.Connect(new UnixDomainSocketEndPoint(socketPath));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    public void Dispose() => Host.Dispose();

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Uri} ({Hostname})");
}
