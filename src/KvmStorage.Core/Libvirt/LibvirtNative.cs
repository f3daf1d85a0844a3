using System.Runtime.InteropServices;

namespace KvmStorage.Core.Libvirt;

/// <summary>
/// The libvirt entry points the live backend uses, declared as libvirt's C API reference gives them (libvirt.org/html,
/// modules libvirt-host, libvirt-storage, libvirt-domain, virterror). <c>char*</c> results the caller owns are
/// declared <see cref="IntPtr"/> and freed with libc <c>free</c> (<see cref="TakeString"/>); <c>const char*</c> results
/// owned by libvirt are declared <see cref="IntPtr"/> too and only read, because a <c>string</c> return would make the
/// marshaller free them (a double free).
/// </summary>
internal static unsafe partial class LibvirtNative
{
    internal const string Library = "libvirt.so.0";

    internal const uint VIR_CONNECT_RO = 1;
    internal const uint VIR_STORAGE_POOL_DEFINE_VALIDATE = 1;
    internal const uint VIR_STORAGE_XML_INACTIVE = 1;
    internal const uint VIR_STORAGE_VOL_CREATE_VALIDATE = 4;
    internal const uint VIR_STORAGE_VOL_RESIZE_SHRINK = 4;
    internal const uint VIR_DOMAIN_XML_INACTIVE = 2;
    internal const uint VIR_DOMAIN_DEFINE_VALIDATE = 1;
    internal const uint VIR_DOMAIN_AFFECT_LIVE = 1;
    internal const uint VIR_DOMAIN_AFFECT_CONFIG = 2;

    internal const int VIR_SECRET_USAGE_TYPE_VOLUME = 1;

    internal const uint VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL = 1;
    internal const uint VIR_DOMAIN_JOB_STATS_COMPLETED = 1;
    internal const uint VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY = 2;
    internal const uint VIR_DOMAIN_BLOCK_COPY_REUSE_EXT = 2;
    internal const uint VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB = 4;
    internal const uint VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT = 2;
    internal const uint VIR_DOMAIN_BLOCK_COMMIT_SHALLOW = 1;
    internal const uint VIR_DOMAIN_BLOCK_COMMIT_ACTIVE = 4;
    internal const uint VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA = 4;
    internal const uint VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY = 16;
    internal const uint VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT = 32;
    internal const uint VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC = 128;

    internal const int VIR_CRED_USERNAME = 1;
    internal const int VIR_CRED_AUTHNAME = 2;
    internal const int VIR_CRED_PASSPHRASE = 5;
    internal const int VIR_CRED_ECHOPROMPT = 6;
    internal const int VIR_CRED_NOECHOPROMPT = 7;

    [StructLayout(LayoutKind.Sequential)]
    internal struct VirConnectAuth
    {
        public int* CredTypes;
        public uint CredTypeCount;
        public delegate* unmanaged<VirConnectCredential*, uint, IntPtr, int> Callback;
        public IntPtr CallbackData;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct VirConnectCredential
    {
        public int Type;
        public IntPtr Prompt;
        public IntPtr Challenge;
        public IntPtr DefaultResult;
        public IntPtr Result;
        public uint ResultLength;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct VirStoragePoolInfo
    {
        public int State;
        public ulong Capacity;
        public ulong Allocation;
        public ulong Available;
    }

    /// <summary><c>virDomainJobInfo</c>: the running job's type and progress (bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct VirDomainJobInfo
    {
        public int Type;
        public ulong TimeElapsed;
        public ulong TimeRemaining;
        public ulong DataTotal;
        public ulong DataProcessed;
        public ulong DataRemaining;
        public ulong MemTotal;
        public ulong MemProcessed;
        public ulong MemRemaining;
        public ulong FileTotal;
        public ulong FileProcessed;
        public ulong FileRemaining;
    }

    /// <summary><c>virDomainBlockJobInfo</c>: a block job's type, bandwidth (an unsigned long) and progress.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct VirDomainBlockJobInfo
    {
        public int Type;
        public nuint Bandwidth;
        public ulong Cur;
        public ulong End;
    }

    /// <summary>The head of <c>virError</c>: code, domain, message (the rest is not read).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct VirErrorHead
    {
        public int Code;
        public int Domain;
        public IntPtr Message;
    }

    [LibraryImport(Library)]
    internal static partial int virInitialize();

    [LibraryImport(Library)]
    internal static partial void virSetErrorFunc(IntPtr userData, delegate* unmanaged<IntPtr, IntPtr, void> handler);

    [LibraryImport(Library)]
    internal static partial VirErrorHead* virGetLastError();

    [LibraryImport(Library)]
    internal static partial void virResetLastError();

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial ConnectionHandle virConnectOpen(string? name);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial ConnectionHandle virConnectOpenReadOnly(string? name);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial ConnectionHandle virConnectOpenAuth(string? name, VirConnectAuth* auth, uint flags);

    [LibraryImport(Library)]
    internal static partial int virConnectClose(IntPtr conn);

    [LibraryImport(Library)]
    internal static partial int virConnectGetLibVersion(ConnectionHandle conn, out ulong version);

    [LibraryImport(Library)]
    internal static partial int virConnectGetVersion(ConnectionHandle conn, out ulong version);

    [LibraryImport(Library)]
    internal static partial IntPtr virConnectGetHostname(ConnectionHandle conn);

    [LibraryImport(Library)]
    internal static partial IntPtr virConnectGetURI(ConnectionHandle conn);

    [LibraryImport(Library)]
    internal static partial int virConnectIsAlive(ConnectionHandle conn);

    [LibraryImport(Library)]
    internal static partial int virConnectListAllStoragePools(ConnectionHandle conn, out IntPtr pools, uint flags);

    [LibraryImport(Library)]
    internal static partial int virConnectListAllDomains(ConnectionHandle conn, out IntPtr domains, uint flags);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial PoolHandle virStoragePoolLookupByName(ConnectionHandle conn, string name);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial PoolHandle virStoragePoolDefineXML(ConnectionHandle conn, string xml, uint flags);

    [LibraryImport(Library)]
    internal static partial int virStoragePoolBuild(PoolHandle pool, uint flags);

    [LibraryImport(Library)]
    internal static partial int virStoragePoolCreate(PoolHandle pool, uint flags);

    [LibraryImport(Library)]
    internal static partial int virStoragePoolDestroy(PoolHandle pool);

    [LibraryImport(Library)]
    internal static partial int virStoragePoolDelete(PoolHandle pool, uint flags);

    [LibraryImport(Library)]
    internal static partial int virStoragePoolUndefine(PoolHandle pool);

    [LibraryImport(Library)]
    internal static partial int virStoragePoolRefresh(PoolHandle pool, uint flags);

    [LibraryImport(Library)]
    internal static partial int virStoragePoolSetAutostart(PoolHandle pool, int autostart);

    [LibraryImport(Library)]
    internal static partial int virStoragePoolGetAutostart(PoolHandle pool, out int autostart);

    [LibraryImport(Library)]
    internal static partial int virStoragePoolIsPersistent(PoolHandle pool);

    [LibraryImport(Library)]
    internal static partial int virStoragePoolGetInfo(PoolHandle pool, out VirStoragePoolInfo info);

    [LibraryImport(Library)]
    internal static partial IntPtr virStoragePoolGetXMLDesc(PoolHandle pool, uint flags);

    [LibraryImport(Library)]
    internal static partial IntPtr virStoragePoolGetName(PoolHandle pool);

    [LibraryImport(Library)]
    internal static partial int virStoragePoolListAllVolumes(PoolHandle pool, out IntPtr volumes, uint flags);

    [LibraryImport(Library)]
    internal static partial int virStoragePoolFree(IntPtr pool);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial VolumeHandle virStorageVolCreateXML(PoolHandle pool, string xml, uint flags);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial VolumeHandle virStorageVolLookupByName(PoolHandle pool, string name);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial VolumeHandle virStorageVolLookupByPath(ConnectionHandle conn, string path);

    [LibraryImport(Library)]
    internal static partial IntPtr virStorageVolGetXMLDesc(VolumeHandle volume, uint flags);

    [LibraryImport(Library)]
    internal static partial IntPtr virStorageVolGetPath(VolumeHandle volume);

    [LibraryImport(Library)]
    internal static partial IntPtr virStorageVolGetName(VolumeHandle volume);

    [LibraryImport(Library)]
    internal static partial int virStorageVolResize(VolumeHandle volume, ulong capacity, uint flags);

    [LibraryImport(Library)]
    internal static partial int virStorageVolDelete(VolumeHandle volume, uint flags);

    [LibraryImport(Library)]
    internal static partial int virStorageVolFree(IntPtr volume);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial DomainHandle virDomainLookupByName(ConnectionHandle conn, string name);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial DomainHandle virDomainDefineXMLFlags(ConnectionHandle conn, string xml, uint flags);

    [LibraryImport(Library)]
    internal static partial IntPtr virDomainGetXMLDesc(DomainHandle domain, uint flags);

    [LibraryImport(Library)]
    internal static partial IntPtr virDomainGetName(DomainHandle domain);

    [LibraryImport(Library)]
    internal static partial int virDomainIsActive(DomainHandle domain);

    [LibraryImport(Library)]
    internal static partial int virDomainIsPersistent(DomainHandle domain);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int virDomainAttachDeviceFlags(DomainHandle domain, string xml, uint flags);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int virDomainUpdateDeviceFlags(DomainHandle domain, string xml, uint flags);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int virDomainDetachDeviceFlags(DomainHandle domain, string xml, uint flags);

    [LibraryImport(Library)]
    internal static partial int virDomainFree(IntPtr domain);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int virDomainBackupBegin(DomainHandle domain, string backupXml, string? checkpointXml, uint flags);

    [LibraryImport(Library)]
    internal static partial int virDomainGetJobInfo(DomainHandle domain, out VirDomainJobInfo info);

    [LibraryImport(Library)]
    internal static partial int virDomainGetJobStats(DomainHandle domain, out int type, out IntPtr parameters, out int count, uint flags);

    [LibraryImport(Library)]
    internal static partial void virTypedParamsFree(IntPtr parameters, int count);

    [LibraryImport(Library)]
    internal static partial int virDomainAbortJob(DomainHandle domain);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial IntPtr virDomainCheckpointCreateXML(DomainHandle domain, string xml, uint flags);

    [LibraryImport(Library)]
    internal static partial int virDomainListAllCheckpoints(DomainHandle domain, out IntPtr checkpoints, uint flags);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial IntPtr virDomainCheckpointLookupByName(DomainHandle domain, string name, uint flags);

    [LibraryImport(Library)]
    internal static partial IntPtr virDomainCheckpointGetXMLDesc(IntPtr checkpoint, uint flags);

    [LibraryImport(Library)]
    internal static partial IntPtr virDomainCheckpointGetName(IntPtr checkpoint);

    [LibraryImport(Library)]
    internal static partial int virDomainCheckpointDelete(IntPtr checkpoint, uint flags);

    [LibraryImport(Library)]
    internal static partial int virDomainCheckpointFree(IntPtr checkpoint);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int virDomainBlockCopy(DomainHandle domain, string disk, string destXml, IntPtr parameters, int count, uint flags);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int virDomainGetBlockJobInfo(DomainHandle domain, string disk, out VirDomainBlockJobInfo info, uint flags);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int virDomainBlockJobAbort(DomainHandle domain, string disk, uint flags);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int virDomainBlockCommit(DomainHandle domain, string disk, string? @base, string? top, nuint bandwidth, uint flags);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial IntPtr virDomainSnapshotCreateXML(DomainHandle domain, string xml, uint flags);

    [LibraryImport(Library)]
    internal static partial int virDomainSnapshotFree(IntPtr snapshot);

    [LibraryImport(Library)]
    internal static partial int virConnectListAllSecrets(ConnectionHandle conn, out IntPtr secrets, uint flags);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial SecretHandle virSecretDefineXML(ConnectionHandle conn, string xml, uint flags);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial SecretHandle virSecretLookupByUUIDString(ConnectionHandle conn, string uuid);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial SecretHandle virSecretLookupByUsage(ConnectionHandle conn, int usageType, string usageId);

    [LibraryImport(Library)]
    internal static partial int virSecretSetValue(SecretHandle secret, byte* value, nuint valueSize, uint flags);

    [LibraryImport(Library)]
    internal static partial IntPtr virSecretGetXMLDesc(SecretHandle secret, uint flags);

    [LibraryImport(Library)]
    internal static partial int virSecretGetUUIDString(SecretHandle secret, byte* buffer);

    [LibraryImport(Library)]
    internal static partial int virSecretUndefine(SecretHandle secret);

    [LibraryImport(Library)]
    internal static partial int virSecretFree(IntPtr secret);

    /// <summary>Reads a caller-owned <c>char*</c> and frees it with libc <c>free</c>.</summary>
    internal static string? TakeString(IntPtr pointer)
    {
        if (pointer == IntPtr.Zero)
        {
            return null;
        }

        try
        {
            return Marshal.PtrToStringUTF8(pointer);
        }
        finally
        {
            IO.NativeMethods.free(pointer);
        }
    }

    /// <summary>Reads a libvirt-owned <c>const char*</c>; never freed.</summary>
    internal static string? PeekString(IntPtr pointer) => pointer == IntPtr.Zero ? null : Marshal.PtrToStringUTF8(pointer);
}
