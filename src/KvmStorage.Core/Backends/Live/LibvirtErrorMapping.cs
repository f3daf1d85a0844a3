using KvmStorage.Core.Domains;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Libvirt;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Volumes;

namespace KvmStorage.Core.Backends.Live;

/// <summary>
/// Gives libvirt's errors for a pool, volume or domain that is not there the module's ids (PoolNotFound,
/// VolumeNotFound, VMNotFound), so that a script matches one id whichever backend it ran on. The P/Invoke layer
/// below knows only libvirt's codes; this is where they meet the module's vocabulary.
/// </summary>
internal static class LibvirtErrorMapping
{
    /// <summary>Runs a call of the live backend, its libvirt errors under the module's ids.</summary>
    public static T Call<T>(Func<T> call)
    {
        try
        {
            return call();
        }
        catch (LibvirtException ex) when (ModuleIdOf(ex) is not null)
        {
            throw Translate(ex);
        }
    }

    /// <inheritdoc cref="Call{T}(Func{T})"/>
    public static void Call(Action call) => Call(() =>
    {
        call();
        return true;
    });

    /// <summary>An error kept in a listing (not thrown), under the id it would have been thrown with.</summary>
    public static KvmStorageException Translate(KvmStorageException error) =>
        error is LibvirtException libvirt && ModuleIdOf(libvirt) is { } id ? libvirt.WithErrorId(id) : error;

    /// <summary>The module's id for libvirt's code, when it has one and the error does not carry it yet.</summary>
    private static string? ModuleIdOf(LibvirtException error)
    {
        string? id = error.Code switch
        {
            LibvirtErrorCodes.NoStoragePool => PoolErrorIds.PoolNotFound,
            LibvirtErrorCodes.NoStorageVolume => VolumeErrorIds.VolumeNotFound,
            LibvirtErrorCodes.NoDomain => DomainErrorIds.VMNotFound,
            _ => null,
        };
        return id == error.ErrorId ? null : id;
    }
}
