using System.Globalization;

namespace KvmStorage.Core.Libvirt;

/// <summary>
/// Error ids of libvirt itself: loading the library, connecting, and the generic id of every other libvirt error. The
/// live backend gives the errors that mean a missing pool, volume or domain the module's own ids.
/// </summary>
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

    /// <summary>The daemon went away under an open connection (stopped, restarted, network lost).</summary>
    public const string ConnectionLost = "LibvirtConnectionLost";

    /// <summary>The connection was closed (Disconnect-LibvirtHost).</summary>
    public const string ConnectionClosed = "ConnectionClosed";

    /// <summary>The id of a libvirt error code: a specific one above, else <c>LibvirtError&lt;code&gt;</c>.</summary>
    public static string ForCode(int code) => code switch
    {
        LibvirtErrorCodes.NoConnect => ConnectFailed,
        LibvirtErrorCodes.AuthFailed => AuthFailed,
        LibvirtErrorCodes.OperationInvalid => OperationInvalid,
        LibvirtErrorCodes.OperationDenied => OperationDenied,
        _ => "LibvirtError" + code.ToString(CultureInfo.InvariantCulture),
    };
}
