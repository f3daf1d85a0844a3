using KvmStorage.Core.Errors;

namespace KvmStorage.Core.Libvirt;

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

    private LibvirtException(LibvirtException original, string errorId)
        : base(original.Kind, errorId, original.Message, original.Target, original)
    {
        Code = original.Code;
        Domain = original.Domain;
        LibvirtMessage = original.LibvirtMessage;
        Function = original.Function;
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
    /// The same failure under the id a caller above this layer gives it (the live backend names a missing pool, volume
    /// or domain with the module's ids); code, kind, message and target stay libvirt's, and this one is the inner
    /// exception.
    /// </summary>
    public LibvirtException WithErrorId(string errorId) => new(this, errorId);

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
