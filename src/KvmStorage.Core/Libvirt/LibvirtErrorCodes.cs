namespace KvmStorage.Core.Libvirt;

/// <summary>libvirt's <c>virErrorDomain</c> values read here (libvirt's <c>include/libvirt/virterror.h</c>).</summary>
public static class LibvirtErrorDomains
{
    /// <summary>VIR_FROM_RPC: the client-daemon transport.</summary>
    public const int Rpc = 7;
}

/// <summary>
/// libvirt's <c>virErrorNumber</c> values that are given an error id or kind of their own (libvirt's
/// <c>include/libvirt/virterror.h</c>, the <c>VIR_ERR_*</c> constants).
/// </summary>
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
    public const int NoSecret = 66;
    public const int ConfigUnsupported = 67;
    public const int OperationTimeout = 68;
    public const int StoragePoolBuilt = 76;
    public const int StorageVolumeExists = 90;
    public const int XmlInvalidSchema = 92;
    public const int AuthUnavailable = 94;
}
