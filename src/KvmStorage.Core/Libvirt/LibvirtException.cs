using KvmStorage.Core.Domains;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Volumes;

namespace KvmStorage.Core.Libvirt;

/// <summary>Error ids of the live backend.</summary>
public static class LibvirtErrorIds
{
    /// <summary>libvirt.so.0 could not be loaded (package libvirt0 missing).</summary>
    public const string LibvirtUnavailable = "LibvirtUnavailable";

    /// <summary>VIR_ERR_NO_CONNECT and failures to open a connection.</summary>
    public const string ConnectFailed = "LibvirtConnectFailed";

    /// <summary>VIR_ERR_AUTH_FAILED.</summary>
    public const string AuthFailed = "LibvirtAuthFailed";

    /// <summary>VIR_ERR_OPERATION_INVALID: e.g. the object is not in a state that allows it.</summary>
    public const string OperationInvalid = "LibvirtOperationInvalid";

    /// <summary>VIR_ERR_OPERATION_DENIED: e.g. a write on a read-only connection.</summary>
    public const string OperationDenied = "LibvirtOperationDenied";

    /// <summary>A hot-unplug was requested but the guest had not released the disk when the wait ended.</summary>
    public const string LiveDetachPending = "LiveDetachPending";

    /// <summary>The image was written but the pool refresh that makes libvirt list it failed.</summary>
    public const string PoolRefreshFailed = "PoolRefreshFailed";

    /// <summary>A write was attempted offline while libvirtd runs on the same root.</summary>
    public const string DaemonRunning = "LibvirtDaemonRunning";

    /// <summary>-Live on a host without a daemon, or on a domain that is not running.</summary>
    public const string LiveChangeUnavailable = "LiveChangeUnavailable";

    /// <summary>An operation the offline backend cannot do (start or stop a pool).</summary>
    public const string DaemonRequired = "LibvirtDaemonRequired";

    /// <summary>A file pool must be running for libvirt to take a new volume.</summary>
    public const string PoolNotActive = "PoolNotActive";

    /// <summary>No connection with that URI is open in the session.</summary>
    public const string ConnectionNotFound = "ConnectionNotFound";

    /// <summary>The daemon went away under an open connection (stopped, restarted, network lost).</summary>
    public const string ConnectionLost = "LibvirtConnectionLost";

    /// <summary>The connection was closed (Disconnect-LibvirtHost).</summary>
    public const string ConnectionClosed = "ConnectionClosed";

    /// <summary>A cmdlet that works on one host was given several connections.</summary>
    public const string MultipleConnections = "MultipleConnectionsNotSupported";

    /// <summary>The generic id for a libvirt error code: <c>LibvirtError&lt;code&gt;</c>.</summary>
    public static string ForCode(int code) => code switch
    {
        LibvirtErrorCodes.NoConnect => ConnectFailed,
        LibvirtErrorCodes.AuthFailed => AuthFailed,
        LibvirtErrorCodes.OperationInvalid => OperationInvalid,
        LibvirtErrorCodes.OperationDenied => OperationDenied,
        LibvirtErrorCodes.NoStoragePool => ErrorIds.PoolNotFound,
        LibvirtErrorCodes.NoStorageVolume => VolumeErrorIds.VolumeNotFound,
        LibvirtErrorCodes.NoDomain => DomainErrorIds.VMNotFound,
        _ => "LibvirtError" + code.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };
}

/// <summary>libvirt's <c>virErrorDomain</c> values the backend treats specially.</summary>
public static class LibvirtErrorDomains
{
    /// <summary>VIR_FROM_RPC: the client-daemon transport.</summary>
    public const int Rpc = 7;
}

/// <summary>libvirt's <c>virErrorNumber</c> values the backend treats specially (libvirt notes §11.1).</summary>
public static class LibvirtErrorCodes
{
    public const int InternalError = 1;
    public const int NoSupport = 3;
    public const int NoConnect = 5;
    public const int OperationDenied = 29;
    public const int InvalidArgument = 8;
    public const int OperationFailed = 9;
    public const int XmlError = 27;
    public const int SystemError = 38;
    public const int NoDomain = 42;
    public const int AuthFailed = 45;
    public const int NoStoragePool = 49;
    public const int NoStorageVolume = 50;
    public const int OperationInvalid = 55;
    public const int ConfigUnsupported = 67;
    public const int OperationTimeout = 68;
    public const int StoragePoolBuilt = 76;
    public const int StorageVolumeExists = 90;
    public const int XmlInvalidSchema = 92;
    public const int AuthUnavailable = 94;
}

/// <summary>A failed libvirt call: libvirt's own code, domain and message, with a KvmStorage error id and kind.</summary>
public sealed class LibvirtException : KvmStorageException
{
    public LibvirtException(int code, int domain, string libvirtMessage, string function, object? target)
        : base(
            IsTransportFailure(code, domain) ? ErrorKind.ResourceUnavailable : KindOf(code),
            IsTransportFailure(code, domain) ? LibvirtErrorIds.ConnectionLost : LibvirtErrorIds.ForCode(code),
            IsTransportFailure(code, domain)
                ? $"The connection to the libvirt daemon was lost ({libvirtMessage}). Check that the daemon runs and is reachable, then connect again with Connect-LibvirtHost."
                : libvirtMessage,
            target)
    {
        Code = code;
        Domain = domain;
        LibvirtMessage = libvirtMessage;
        Function = function;
    }

    public LibvirtException()
        : this(0, 0, "A libvirt call failed.", string.Empty, null)
    {
    }

    public LibvirtException(string message)
        : this(0, 0, message, string.Empty, null)
    {
    }

    public LibvirtException(string message, Exception innerException)
        : base(ErrorKind.InvalidOperation, "LibvirtError0", message, null, innerException)
    {
        LibvirtMessage = message;
        Function = string.Empty;
    }

    /// <summary>libvirt's <c>virErrorNumber</c>.</summary>
    public int Code { get; }

    /// <summary>libvirt's <c>virErrorDomain</c> (which part of libvirt reported it).</summary>
    public int Domain { get; }

    /// <summary>The message exactly as libvirt gave it.</summary>
    public string LibvirtMessage { get; }

    /// <summary>The libvirt function that failed.</summary>
    public string Function { get; }

    /// <summary>
    /// A failure of the RPC layer itself (VIR_FROM_RPC): "End of file while reading data", "Cannot write data",
    /// "client socket is closed". Errors the daemon reports carry the domain of the driver that raised them.
    /// </summary>
    private static bool IsTransportFailure(int code, int domain) =>
        domain == LibvirtErrorDomains.Rpc && code is LibvirtErrorCodes.SystemError or LibvirtErrorCodes.InternalError;

    private static ErrorKind KindOf(int code) => code switch
    {
        LibvirtErrorCodes.NoStoragePool or LibvirtErrorCodes.NoStorageVolume or LibvirtErrorCodes.NoDomain => ErrorKind.NotFound,
        LibvirtErrorCodes.AuthFailed or LibvirtErrorCodes.OperationDenied or LibvirtErrorCodes.AuthUnavailable => ErrorKind.PermissionDenied,
        LibvirtErrorCodes.NoConnect or LibvirtErrorCodes.SystemError => ErrorKind.ResourceUnavailable,
        LibvirtErrorCodes.OperationInvalid => ErrorKind.InvalidOperation,
        LibvirtErrorCodes.XmlError or LibvirtErrorCodes.XmlInvalidSchema or LibvirtErrorCodes.InvalidArgument or LibvirtErrorCodes.ConfigUnsupported => ErrorKind.InvalidArgument,
        LibvirtErrorCodes.NoSupport => ErrorKind.NotSupported,
        LibvirtErrorCodes.OperationTimeout => ErrorKind.ResourceBusy,
        LibvirtErrorCodes.StorageVolumeExists or LibvirtErrorCodes.StoragePoolBuilt => ErrorKind.AlreadyExists,
        _ => ErrorKind.InvalidOperation,
    };
}
