using KvmStorage.Core.Domains;

namespace KvmStorage.Infrastructure;

/// <summary>The -Live and -Config switches of the VM disk cmdlets as a <see cref="DeviceScope"/>.</summary>
internal static class DeviceScopes
{
    public static DeviceScope From(bool live, bool config) =>
        (live ? DeviceScope.Live : DeviceScope.Default) | (config ? DeviceScope.Config : DeviceScope.Default);
}
